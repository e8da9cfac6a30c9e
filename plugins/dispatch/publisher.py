"""A thread's own publisher: one round trip per message, and nothing made anew.

kombu's Redis transport makes a new Redis client for every message it publishes one at
a time (some 150 µs of Python here). A publish batch makes its client once; so each
thread that sends keeps a producer on a connection of its own with a batch left open,
and a message is buffered in it and flushed at once: still one round trip, and still a
plain Celery message, at a fraction of the cost.

A publisher that fails is closed and forgotten; the send then goes the usual way (see
:func:`~flask_execute.plugins.dispatch.sending.send_one`) when the failure proves the
message never left, and the next send makes a new publisher.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kombu import Connection, Producer

    from flask_execute.runtime import AppState

#: Key of the plugin's per-thread publishers in ``state.plugin_data``.
_DATA = "dispatch.publishers"


class Publisher:
    """A producer on a connection of its own, with a kombu publish batch open.

    :param state: the application's record.
    """

    def __init__(self, state: AppState) -> None:
        self.pid = os.getpid()
        self.connection: Connection = state.celery_app.connection_for_write()
        self.producer: Producer = state.celery_app.amqp.Producer(self.connection)
        self._batch: Any = self.producer.batch(max_size=1024)
        self._batch.__enter__()

    def flush(self) -> None:
        """Send what the batch holds: one round trip."""
        self._batch.flush()

    def close(self) -> None:
        """Drop what the batch holds and release the connection."""
        with contextlib.suppress(Exception):
            self._batch.__exit__(RuntimeError, RuntimeError("closed"), None)
        with contextlib.suppress(Exception):
            self.connection.release()


def publisher_for(state: AppState) -> Publisher | None:
    """This thread's publisher for ``state``'s application, made on first use;
    ``None`` when the broker's transport cannot batch (AMQP: kombu publishes at once)."""
    local = state.plugin_data.get(_DATA)
    if local is None:
        local = state.plugin_data.setdefault(_DATA, threading.local())
    publisher: Publisher | None = getattr(local, "publisher", None)
    if publisher is not None and publisher.pid == os.getpid():
        return publisher
    # (a publisher inherited through fork shares its parent's socket: never used)
    if getattr(local, "unsupported", False):
        return None
    publisher = Publisher(state)
    if not publisher.producer.supports_batch_publish:
        publisher.close()
        local.unsupported = True
        return None
    local.publisher = publisher
    return publisher


def forget(state: AppState, publisher: Publisher) -> None:
    """Close ``publisher`` after a failure; this thread makes a new one next time."""
    local = state.plugin_data.get(_DATA)
    if local is not None and getattr(local, "publisher", None) is publisher:
        local.publisher = None
    publisher.close()
