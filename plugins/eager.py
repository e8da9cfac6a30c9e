"""Default plugin ``eager``: with ``task_always_eager`` tasks run in-process.

No broker and no workers: each message runs at once through Celery's ``Task.apply``
(the same task class, plugins and app context as on a worker), and the Future it
returns is already done. The call still goes through the serializer and back, so a
function or argument that could not reach a worker fails in tests too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from celery.utils import uuid

from flask_execute.markers import hookimpl

if TYPE_CHECKING:
    from flask_execute.futures import Future
    from flask_execute.runtime import AppState, Message


@hookimpl(tryfirst=True)
def flask_execute_send(state: AppState, messages: Sequence[Message]) -> list[Future] | None:
    if not state.eager:
        return None
    futures = []
    for message in messages:
        task_id = uuid()
        future = state.pm.make_future(state, task_id, message.name)
        state._pending[task_id] = future  # so current_task.update_state reaches it
        try:
            result = message.task.apply(message.args, message.kwargs, task_id=task_id, throw=False)
        finally:
            state.untrack(task_id)
        state.resolve(future, result.state, result.result)
        futures.append(future)
    return futures
