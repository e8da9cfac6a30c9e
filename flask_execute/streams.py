"""Streamed results, on the worker: what a submitted generator function yields.

A generator function submitted with ``celery.submit`` runs on the worker inside the run
task, which iterates it there (in the application context, with ``current_task``) and
writes what it yields in **batches**: one key of the result backend per batch, the
items packed and signed as a result is (bound to the task id and the batch's number),
then Celery's custom state ``STREAM`` with the number of batches written, which the
result listener delivers to the submitting side's
:class:`~flask_execute.stream_future.StreamFuture`. The first item goes out at once; the
next ones are gathered for up to ``CELERY_PROGRESS_INTERVAL`` (or
:data:`BATCH_ITEMS` items), so a fast generator writes a few batches, not one key per
item. The generator's return value is the task's result, together with the number of
batches, so the reader knows it has every item before it ends.

The worker never waits for a reader: batches wait in the backend, expiring with the
results (``result_expires``), and a reader holds one batch at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask_execute.context import DEFAULT_PROGRESS_INTERVAL

if TYPE_CHECKING:
    import celery

    from flask_execute.wire import Wire

#: The Celery state a stream's task stores after each batch: ``{"batches", "items"}``.
STREAM = "STREAM"

#: Most items in one batch: a batch is written when it is this full, even early.
BATCH_ITEMS = 1000

#: Set on the request while a stream runs: it cannot be retried (its items are out).
STREAM_ATTRIBUTE = "flask_execute_stream"


@dataclass
class StreamEnd:
    """What a stream's task returns: the generator's return value and how many batches
    and items it wrote (``inline``: the items themselves, in eager mode)."""

    value: Any
    batches: int
    items: int
    inline: list[Any] = field(default_factory=list)


def batch_key(backend: Any, task_id: str, index: int) -> Any:
    """The result backend key of batch ``index`` of task ``task_id``."""
    return backend.get_key_for_task(task_id, key=f"-stream-{index}")


def batch_binding(task_id: str, index: int) -> str:
    """What batch ``index`` is signed for: a batch copied to another place of the
    stream, or to another task, does not verify."""
    return f"{task_id}#stream-{index}"


class StreamWriter:
    """Writes the items of one running stream in batches (see the module docstring).

    :param task: the run task (its id and result backend).
    :param wire: packs and signs each batch.
    :param interval: seconds items gather before a batch is written.
    :param limit: the largest batch, serialized (``CELERY_MAX_PAYLOAD``).

    A batch is written by the next item once it is due, or else by a timer when the
    generator takes longer than that to yield again, so no item waits on a slow next
    one. Streams need a key-value result backend, whose clients are thread-safe.
    """

    def __init__(self, task: celery.Task, wire: Wire, interval: float, limit: int | None) -> None:
        self.task = task
        self.task_id = str(task.request.id)
        self.wire = wire
        self.interval = interval
        self.limit = limit
        self.batches = 0
        self.items = 0
        self._held: list[Any] = []
        self._last = -float("inf")
        self._lock = threading.Lock()  # the generator's thread and the timer's
        self._timer: threading.Timer | None = None
        self._error: BaseException | None = None

    def add(self, item: Any) -> None:
        """Take one item; write the batch if it is due or full, else make sure a timer
        writes it once due."""
        with self._lock:
            self._raise_timer_error()
            self._held.append(item)
            wait = self.interval - (time.monotonic() - self._last)
            if len(self._held) >= BATCH_ITEMS or wait <= 0:
                self._write()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Write the items held, if any (the stream ends); stop the timer."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._raise_timer_error()
            self._write()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            try:
                self._write()
            except BaseException as exc:  # raised in the task's thread at its next item
                self._error = exc

    def _raise_timer_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _write(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        index = self.batches
        packed = self.wire.pack_result(
            held, task_id=batch_binding(self.task_id, index), limit=self.limit
        )
        backend = self.task.backend
        backend.set(batch_key(backend, self.task_id, index), backend.encode(packed))
        self.batches += 1
        self.items += len(held)
        self._last = time.monotonic()
        meta = {"batches": self.batches, "items": self.items}
        # The backend directly: Celery's request context is per thread, and the timer
        # writes from its own.
        backend.store_result(self.task_id, meta, STREAM)


def drain(generator: Generator[Any, None, Any], writer: StreamWriter | None) -> StreamEnd:
    """Run ``generator`` to its end, writing what it yields through ``writer`` (kept in
    memory without one: eager mode); return its :class:`StreamEnd`. The items yielded
    before an exception are written before it propagates."""
    inline: list[Any] = []
    try:
        while True:
            try:
                item = next(generator)
            except StopIteration as stop:
                value = stop.value
                break
            if writer is None:
                inline.append(item)
            else:
                writer.add(item)
    finally:
        if writer is not None:
            writer.flush()
    if writer is None:
        return StreamEnd(value, 0, len(inline), inline)
    return StreamEnd(value, writer.batches, writer.items)


def stream_writer(task: celery.Task, wire: Wire, config: Any) -> StreamWriter | None:
    """The writer of the stream ``task`` runs now (``None`` in eager mode)."""
    if task.request.is_eager:
        return None
    interval = config.get("CELERY_PROGRESS_INTERVAL", DEFAULT_PROGRESS_INTERVAL)
    return StreamWriter(task, wire, interval, config["CELERY_MAX_PAYLOAD"])
