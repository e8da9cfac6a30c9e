"""Cancel marks: how a cancelled Future reaches the task that runs for it.

``future.cancel()`` writes a mark next to the task's result key in a key-value result
backend (``<result key>-cancelled``). Its value is the POSIX time after which the
worker may terminate the task (``inf`` for a call of a ``map``, whose process is
shared with the other calls of its chunk). The same marks serve a submitted task, a
registered one and a call of a ``map``:

- the task itself reads its mark through a :class:`CancelWatch`, which is what
  ``current_task.cancelled`` asks (:func:`run_cancelled`);
- a chunk skips marked calls that have not started;
- a worker's main process reads the marks of the tasks it runs and terminates those
  past their time (the ``cancel`` plugin).

Marks are read for their presence and parsed as numbers only: nothing in them is
unpickled.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.backends.base import BaseKeyValueStoreBackend
from celery.exceptions import Ignore

logger = logging.getLogger("flask_execute")

#: Seconds between two reads of a running task's mark: ``current_task.cancelled`` is
#: cheap in a tight loop, and a cancel is seen within this time.
POLL_INTERVAL = 0.25


class TaskCancelled(Ignore):  # type: ignore[misc]
    """Ends a run whose Future was cancelled.

    A task's state is stored as ``REVOKED`` before this is raised; as Celery's
    :exc:`~celery.exceptions.Ignore`, it keeps Celery from storing anything else. A
    chunk turns it into the cancelled outcome of the call that raised it.
    """


class CancelMarks:
    """Cancelled tasks and calls, marked in a key-value result backend.

    :param backend: the application's Celery result backend. Backends that are not
        key-value stores (databases) cannot carry marks: :attr:`supported` is false,
        marking does nothing and nothing reads as marked.
    """

    #: Ends the key of a mark, after the task's own result key.
    SUFFIX = "-cancelled"

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.supported = isinstance(backend, BaseKeyValueStoreBackend)

    def _key(self, task_id: str) -> Any:
        return self.backend.get_key_for_task(task_id, key=self.SUFFIX)

    def mark(self, task_id: str, terminate_at: float = math.inf) -> None:
        """Mark ``task_id`` cancelled (the mark expires with results).

        :param terminate_at: POSIX time after which a worker may terminate the task;
            ``inf`` (the default) never.
        """
        if self.supported:
            self.backend.set(self._key(task_id), repr(float(terminate_at)))

    def _values(self, task_ids: list[str]) -> list[Any]:
        if not self.supported or not task_ids:
            return []
        return list(self.backend.mget([self._key(t) for t in task_ids]))

    def read(self, task_ids: list[str]) -> set[str]:
        """Which of ``task_ids`` are marked cancelled (one round trip)."""
        values = self._values(task_ids)
        return {t for t, v in zip(task_ids, values, strict=True) if v}

    def is_marked(self, task_id: str) -> bool:
        """Whether ``task_id`` is marked cancelled."""
        return bool(self.read([task_id]))

    def deadlines(self, task_ids: list[str]) -> dict[str, float]:
        """When each marked one of ``task_ids`` may be terminated (one round trip).

        A mark being written (an empty file of the ``file://`` backend) or holding
        no number is left out, to be read again next time.
        """
        found: dict[str, float] = {}
        for task_id, value in zip(task_ids, self._values(task_ids), strict=True):
            if not value:
                continue
            try:
                found[task_id] = float(value)
            except ValueError:
                continue
        return found


class CancelWatch:
    """Whether one run of a task was cancelled, read from its mark.

    :param marks: the application's marks.
    :param task_id: the id the run reports under (a call's id in a chunk).

    The mark is read on the first question, then at most every :data:`POLL_INTERVAL`
    seconds; once seen, the answer stays true. A read that fails (the backend is down)
    answers ``False`` and is logged.
    """

    def __init__(self, marks: CancelMarks, task_id: str) -> None:
        self.marks = marks
        self.task_id = task_id
        self.started = time.monotonic()
        self._read_at: float | None = None
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """Whether the task was cancelled (read from the backend when due)."""
        due = self._read_at is None or time.monotonic() - self._read_at >= POLL_INTERVAL
        if not self._cancelled and due:
            self.read()
        return self._cancelled

    def read(self) -> bool:
        """Read the mark now."""
        self._read_at = time.monotonic()
        try:
            self._cancelled = self.marks.is_marked(self.task_id)
        except Exception as exc:  # the run goes on; the next question reads again
            logger.warning("could not read the cancel mark of %s: %s", self.task_id, exc)
        return self._cancelled

    def finished(self) -> bool:
        """Whether the run that just ended was cancelled.

        Reads the mark once more unless it was read, or the run started, less than
        :data:`POLL_INTERVAL` ago: a short task costs no read, and a cancel that came
        within that time of its end leaves its outcome stored.
        """
        if not self._cancelled:
            last = self.started if self._read_at is None else self._read_at
            if time.monotonic() - last >= POLL_INTERVAL:
                self.read()
        return self._cancelled


_watch: contextvars.ContextVar[CancelWatch | None] = contextvars.ContextVar(
    "flask_execute.cancel_watch", default=None
)


@contextmanager
def watching(watch: CancelWatch) -> Iterator[CancelWatch]:
    """Make ``watch`` answer :func:`run_cancelled` for its task within the block."""
    token = _watch.set(watch)
    try:
        yield watch
    finally:
        _watch.reset(token)


def run_cancelled(task_id: str) -> bool:
    """Whether the run of ``task_id`` going on here was cancelled; ``False`` when no
    :class:`CancelWatch` watches it (eager mode, the ``cancel`` plugin blocked)."""
    watch = _watch.get()
    return watch is not None and watch.task_id == task_id and watch.cancelled
