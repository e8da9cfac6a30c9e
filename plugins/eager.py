"""Default plugin ``eager``: with ``task_always_eager`` tasks run in-process.

No broker and no workers: each message runs at once through Celery's ``Task.apply``
(the same task class, plugins and app context as on a worker), and the Future it
returns is already done. The call still goes through the serializer and back, so a
function or argument that could not reach a worker fails in tests too.

Blocked while eager mode is on, ``init_app`` fails: nothing is ever published in eager
mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState

if TYPE_CHECKING:
    from flask import Flask

    from flask_execute.futures import Future
    from flask_execute.runtime import Message


@hookimpl(tryfirst=True)
def flask_execute_send(app: Flask, messages: Sequence[Message]) -> list[Future] | None:
    state = AppState.of(app)
    if not state.eager:
        return None
    tracker = state.futures
    futures = []
    for message in messages:
        task_id = message.task_id
        future = message.make_future(app, state.pm)
        tracker.track(future, listen=False)  # so current_task.update_state reaches it
        try:
            result = message.task.apply(message.args, message.kwargs, task_id=task_id, throw=False)
        finally:
            tracker.untrack(task_id)
        tracker.resolve(future, result.state, result.result)
        futures.append(future)
    return futures
