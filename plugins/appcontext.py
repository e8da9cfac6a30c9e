"""Default plugin ``appcontext``: every task runs in the Flask application context.

A fresh application context is pushed for each run (so ``g`` and teardown handlers
behave as in a request), and :data:`~flask_execute.current_task` is bound to the task;
its progress reports are coalesced to one write per ``CELERY_PROGRESS_INTERVAL``.

Blocked, tasks run without an application context and ``current_task`` is unbound.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from flask_execute.context import DEFAULT_PROGRESS_INTERVAL, RunningTask, bind_task
from flask_execute.errors import ConfigurationError
from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState

if TYPE_CHECKING:
    import celery
    from flask import Flask


KEYS: dict[str, Any] = {
    # Seconds between two writes of a running call's progress reports (0: every one).
    "CELERY_PROGRESS_INTERVAL": DEFAULT_PROGRESS_INTERVAL,
}


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(config: Mapping[str, Any]) -> None:
    value = config["CELERY_PROGRESS_INTERVAL"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
        raise ConfigurationError(
            "CELERY_PROGRESS_INTERVAL must be a number of seconds from 0 (write every "
            f"report) to 3600, not {value!r}"
        )


@hookimpl(wrapper=True)
def flask_execute_run_task(
    app: Flask, task: celery.Task, run: Callable[[], Any]
) -> Generator[None, Any, Any]:
    on_update = None
    if task.request.is_eager:
        state = AppState.of(app)
        on_update = partial(_eager_update, state, str(task.request.id))
    interval = app.config["CELERY_PROGRESS_INTERVAL"]
    with app.app_context(), bind_task(RunningTask(task, on_update, interval)):
        return (yield)


def _eager_update(state: AppState, task_id: str, status: str, meta: Any) -> None:
    state.futures.deliver(task_id, {"status": status, "result": meta})
