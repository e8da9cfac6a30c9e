"""``current_task``: the task being run, like Flask's ``current_app``."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from werkzeug.local import LocalProxy

if TYPE_CHECKING:
    import celery


class RunningTask:
    """What :data:`~flask_execute.current_task` points to while a task runs.

    Attribute access falls through to the Celery task (``request``, ``retry``, ``name``
    ...); ``update_state`` reaches the submitting side's Future, through the result
    backend on a worker and directly in eager mode.

    :param task: the Celery task being run.
    :param on_update: called instead of the backend in eager mode.
    """

    def __init__(
        self,
        task: celery.Task,
        on_update: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.task = task
        self._on_update = on_update

    @property
    def id(self) -> str:
        """The task id, the same as the submitting side's ``future.id``."""
        return str(self.task.request.id)

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


#: The task currently running, or unbound (falsy) outside a task::
#:
#:     if current_task:
#:         current_task.update_state(state="PROGRESS", meta={"done": 3})
current_task: RunningTask = LocalProxy(  # type: ignore[assignment]
    _current, unbound_message="current_task is only available while a task runs."
)
