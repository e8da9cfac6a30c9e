"""``current_task``: the task being run, like Flask's ``current_app``."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from werkzeug.local import LocalProxy

from flask_execute.cancelling import run_cancelled
from flask_execute.progress import PROGRESS, ProgressReporter, progress_meta

if TYPE_CHECKING:
    import celery

logger = logging.getLogger("flask_execute")

#: Seconds between two progress writes of one call, unless configured
#: (``CELERY_PROGRESS_INTERVAL``).
DEFAULT_PROGRESS_INTERVAL = 0.1


class RunningTask:
    """What :data:`~flask_execute.current_task` points to while a task runs.

    Attribute access falls through to the Celery task (``request``, ``retry``, ``name``
    ...); ``update_state`` reaches the submitting side's Future, through the result
    backend on a worker and directly in eager mode.

    :param task: the Celery task being run.
    :param on_update: called instead of the backend in eager mode.
    :param progress_interval: seconds between two writes of :meth:`progress` reports.
    """

    def __init__(
        self,
        task: celery.Task,
        on_update: Callable[[str, Any], None] | None = None,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
    ) -> None:
        self.task = task
        self._on_update = on_update
        self._progress_interval = progress_interval
        self._reporter: ProgressReporter | None = None

    @property
    def id(self) -> str:
        """The task id, the same as the submitting side's ``future.id``."""
        return str(self.task.request.id)

    @property
    def cancelled(self) -> bool:
        """``True`` once the task's Future was cancelled: stop early and clean up.

        Cheap in a tight loop: the result backend is read at most every quarter
        second, and the answer stays true once seen. Always ``False`` in eager mode.
        A task still running once ``CELERY_CANCEL_GRACE`` has passed is terminated.
        """
        return run_cancelled(self.id)

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kw: Any
    ) -> None:
        """Record a custom state (e.g. ``"PROGRESS"``) and metadata for this task.

        The Future on the submitting side shows it as ``future.state`` and
        ``future.info``.
        """
        if self._on_update is not None and task_id in (None, self.id):
            self._on_update(state or "PENDING", meta)
            return
        self.task.update_state(task_id=task_id, state=state, meta=meta, **kw)

    def progress(self, done: float, total: float | None = None, **meta: Any) -> None:
        """Report how far the call got: ``done`` out of ``total`` (``None``: unknown),
        with any JSON-serializable ``meta``.

        The submitting side reads it as ``future.progress``; progress callbacks, the
        status endpoint and ``flask celery watch`` show it. Reports are coalesced (at
        most one write per ``CELERY_PROGRESS_INTERVAL``), and the last one is always
        written before the call's outcome, so reporting on every step of a tight loop
        is cheap.

        :raises ValueError: ``done`` is negative or more than ``total``, or ``total``
            is not more than 0.
        :raises TypeError: ``done``/``total`` are not numbers, or a ``meta`` value is
            not JSON-serializable.
        """
        checked = progress_meta(done, total, meta)
        reporter = self._reporter
        if reporter is None:
            reporter = self._reporter = ProgressReporter(
                self._write_progress, self._progress_interval
            )
        reporter.report(checked)

    def _write_progress(self, meta: dict[str, Any]) -> None:
        self.update_state(state=PROGRESS, meta=meta)

    def finish(self) -> None:
        """Write the progress report still held, if any (called as the run ends)."""
        reporter = self._reporter
        if reporter is None:
            return
        try:
            reporter.flush()
        except Exception as exc:  # the outcome matters more than its last report
            logger.warning("could not write the last progress of %s: %s", self.id, exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def __repr__(self) -> str:
        return f"<RunningTask {self.task.name} {self.id}>"


_current: contextvars.ContextVar[RunningTask] = contextvars.ContextVar("flask_execute.task")


@contextmanager
def bind_task(handle: RunningTask) -> Iterator[RunningTask]:
    """Make ``handle`` the :data:`~flask_execute.current_task` for the duration of the block."""
    token = _current.set(handle)
    try:
        yield handle
    finally:
        _current.reset(token)
        handle.finish()


#: The task currently running, or unbound (falsy) outside a task::
#:
#:     if current_task:
#:         current_task.progress(3, 10)
current_task: RunningTask = LocalProxy(  # type: ignore[assignment]
    _current, unbound_message="current_task is only available while a task runs."
)
