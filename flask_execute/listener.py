"""Result sources: one background thread per application feeds every Future.

:class:`RedisResultSource` pattern-subscribes once to the Redis backend's result
channels (Celery's Redis backend publishes every state it stores), so a result is
pushed to the waiting process with no polling and no subscription per task.
:class:`PollingResultSource` serves every other backend (the ``file://`` development
fallback, databases) by polling the pending ids from one thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from celery import states

from flask_execute.config import result_backend_key
from flask_execute.errors import BrokerUnavailable

if TYPE_CHECKING:
    from flask_execute.runtime import AppState

logger = logging.getLogger("flask_execute")

#: Seconds the marker writer waits to gather a batch of submitted ids.
MARKER_LINGER = 0.02


class ResultSource(Protocol):
    """Watches the result backend and hands task states to the application's
    :class:`~flask_execute.tracking.Tracker` (``state.futures.deliver``)."""

    def start(self) -> None:
        """Start watching.

        :raises ~flask_execute.BrokerUnavailable: the backend is unreachable.
        """

    def stop(self) -> None:
        """Stop the background thread."""

    def submitted(self, task_id: str, name: str | None) -> None:
        """A new task is about to be published: watch it and record that it exists."""

    def withdrawn(self, task_id: str) -> None:
        """A task announced by :meth:`submitted` was never published: erase the record
        that it exists, so that nobody waits for it."""

    def watch(self, task_id: str) -> None:
        """Watch an existing task, delivering its current state if it has one."""

    def lookup(self, task_id: str) -> Mapping[str, Any] | None:
        """Return the stored meta of ``task_id``, or ``None`` if nothing is known of it."""

    def is_listener_thread(self) -> bool:
        """Whether the calling thread is this source's background thread."""


class _ThreadedSource:
    """Common thread handling of the sources."""

    thread_name = "flask_execute-results"

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.backend = state.celery_app.backend
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def is_listener_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def lookup(self, task_id: str) -> Mapping[str, Any] | None:
        raw = self.backend.get(self.backend.get_key_for_task(task_id))
        if not raw:
            return None
        meta: Mapping[str, Any] = self.backend.decode(raw)
        return meta

    def watch(self, task_id: str) -> None:
        meta = self.lookup(task_id)
        if meta is not None:
            self.state.futures.deliver(task_id, meta)


class RedisResultSource(_ThreadedSource):
    """Results pushed by Redis pub/sub: one ``PSUBSCRIBE`` for the whole application.

    :param state: the application's state.
    :param timeout: how long ``start`` waits for the subscription.
    """

    def __init__(self, state: AppState, timeout: float) -> None:
        super().__init__(state)
        self.timeout = timeout
        self.prefix: bytes = self.backend.key_t(self.backend.task_keyprefix)
        self.client = self.backend.client
        self._ready = threading.Event()
        self._error: BaseException | None = None
        # (task id, name, whether it exists): a marker to write, or one to erase.
        self._markers: queue.SimpleQueue[tuple[str, str | None, bool]] = queue.SimpleQueue()
        expires = self.backend.expires
        self._expires = int(expires) if expires else None

    def start(self) -> None:
        started = time.monotonic()
        self._spawn()
        if not self._ready.wait(self.timeout) or self._error is not None:
            # Not joined: the thread ends by itself, its socket operations are bounded.
            self._stop.set()
            url = self.backend.as_uri()
            took = time.monotonic() - started
            why = (
                f"{self._error}; gave up after {took:.2f}s"
                if self._error is not None
                else f"no answer within {self.timeout:g}s"
            )
            raise BrokerUnavailable(
                f"cannot subscribe to the result backend at {url} ({why}): start Redis or "
                f"fix {result_backend_key(self.state.app.config)}"
            )
        threading.Thread(
            target=self._write_markers, name="flask_execute-markers", daemon=True
        ).start()

    def stop(self) -> None:
        super().stop()
        self._markers.put(("", None, False))

    def submitted(self, task_id: str, name: str | None) -> None:
        self._markers.put((task_id, name, True))

    def withdrawn(self, task_id: str) -> None:
        # Queued behind its marker, so the erase follows the write.
        self._markers.put((task_id, None, False))

    def _write_markers(self) -> None:
        # Records each submitted id as PENDING (SET NX: never over a stored result), off
        # the submitting thread, so celery.get(id) elsewhere can tell it from an unknown id.
        # Batches linger briefly so that a burst of submits costs a few round trips and
        # little GIL time; another process may see a new id as unknown for that long.
        encode = self.backend.encode
        pipe = self.client.pipeline(transaction=False)
        while not self._stop.is_set():
            batch = [self._markers.get()]
            self._stop.wait(MARKER_LINGER)
            while not self._markers.empty() and len(batch) < 5000:
                batch.append(self._markers.get())
            for task_id, name, exists in batch:
                if not task_id:
                    continue
                key = self.prefix + task_id.encode()
                if not exists:
                    pipe.delete(key)
                    continue
                meta = {"status": states.PENDING, "result": None, "task_id": task_id, "name": name}
                pipe.set(key, encode(meta), nx=True, ex=self._expires)
            try:
                pipe.execute()
            except Exception as exc:  # the markers are a convenience; results still flow
                logger.warning("could not record submitted tasks: %s", exc)

    def _run(self) -> None:
        offset = len(self.prefix)
        pubsub = None
        backoff = 0.1
        lost = False  # warned once per outage; every failed attempt after that is debug
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._subscribe()
                    if self._ready.is_set():
                        self._resync()
                    if lost:
                        logger.warning("result listener reconnected to Redis")
                        lost = False
                    self._ready.set()
                    backoff = 0.1
                message = pubsub.get_message(timeout=1.0)
                if message is None or message["type"] != "pmessage":
                    continue
                task_id = message["channel"][offset:].decode()
                if self.state.futures.is_pending(task_id):
                    self.state.futures.deliver(task_id, self.backend.decode(message["data"]))
            except Exception as exc:
                if not self._ready.is_set():
                    self._error = exc
                    self._ready.set()
                    return
                log = logger.debug if lost else logger.warning
                log("result listener lost Redis (%s); reconnecting", exc)
                lost = True
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                pubsub = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
        if pubsub is not None:
            pubsub.close()

    def _subscribe(self) -> Any:
        # Senders may rely on the subscription only once Redis confirmed it. Every step
        # is bounded: the backend's socket timeouts, then ``timeout`` for the reply.
        pubsub = self.client.pubsub()
        try:
            pubsub.psubscribe(self.prefix + b"*")
            deadline = time.monotonic() + self.timeout
            while (left := deadline - time.monotonic()) > 0:
                reply = pubsub.get_message(timeout=left)
                if reply is not None and reply["type"] == "psubscribe":
                    return pubsub
            raise TimeoutError(f"Redis did not confirm the subscription within {self.timeout}s")
        except BaseException:
            with contextlib.suppress(Exception):
                pubsub.close()
            raise

    def _resync(self) -> None:
        # Results published while we were disconnected were missed: read them instead.
        for task_id in self.state.futures.pending_ids():
            self.watch(task_id)


class PollingResultSource(_ThreadedSource):
    """Polls the backend for every pending task from one thread.

    :param state: the application's state.
    :param interval: seconds between polls.
    """

    def __init__(self, state: AppState, interval: float) -> None:
        super().__init__(state)
        self.interval = interval

    def start(self) -> None:
        self._spawn()

    def submitted(self, task_id: str, name: str | None) -> None:
        # Stored before the task is published, so it can never overwrite the result.
        self.backend.store_result(task_id, None, states.PENDING, request=None)

    def withdrawn(self, task_id: str) -> None:
        self.backend.forget(task_id)

    def lookup(self, task_id: str) -> Mapping[str, Any] | None:
        meta: Mapping[str, Any] = self.backend.get_task_meta(task_id)
        # A missing entry comes back as exactly {status, result}; a stored one has more.
        return meta if "task_id" in meta or meta.get("status") != states.PENDING else None

    def watch(self, task_id: str) -> None:
        pass  # the next poll delivers it

    def _run(self) -> None:
        # The last state delivered per task: a new PROGRESS meta is news, a repeat is not.
        seen: dict[str, tuple[str, Any]] = {}
        while not self._stop.wait(self.interval):
            for task_id in self.state.futures.pending_ids():
                try:
                    meta = self.backend.get_task_meta(task_id)
                except Exception as exc:
                    logger.warning("polling %s failed: %s", task_id, exc)
                    time.sleep(self.interval)
                    continue
                status = meta.get("status", states.PENDING)
                current = (status, meta.get("result"))
                if status != states.PENDING and seen.get(task_id) != current:
                    seen[task_id] = current
                    self.state.futures.deliver(task_id, meta)
                    if status in states.READY_STATES:
                        seen.pop(task_id, None)
