"""Default plugin ``appcontext``: every task runs in the Flask application context.

A fresh application context is pushed for each run (so ``g`` and teardown handlers
behave as in a request), and :data:`~flask_execute.current_task` is bound to the task.

Blocked, tasks run without an application context and ``current_task`` is unbound.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from typing import TYPE_CHECKING, Any

from flask_execute.context import RunningTask, bind_task
from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState

if TYPE_CHECKING:
    import celery
    from flask import Flask


@hookimpl(wrapper=True)
def flask_execute_run_task(
    app: Flask, task: celery.Task, run: Callable[[], Any]
) -> Generator[None, Any, Any]:
    on_update = None
    if task.request.is_eager:
        state = AppState.of(app)
        on_update = partial(_eager_update, state, str(task.request.id))
    with app.app_context(), bind_task(RunningTask(task, on_update)):
        return (yield)


def _eager_update(state: AppState, task_id: str, status: str, meta: Any) -> None:
    state.futures.deliver(task_id, {"status": status, "result": meta})
