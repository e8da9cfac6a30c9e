"""The chunk task: runs the calls of one ``celery.map`` chunk on a worker.

Each call runs through :func:`~flask_execute.hookspecs.flask_execute_run_task` as a
submitted function does (its own application context, ``current_task``), under its own
id: ``current_task.request.id`` is the call's id while it runs, so progress it reports
reaches that call's Future. One call's exception is that call's outcome; the rest of the
chunk still runs. Calls cancelled before they start are skipped; a call that ends after
its cancel was seen (``current_task.cancelled``) has the cancelled outcome.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask_execute.cancelling import CancelMarks, TaskCancelled
from flask_execute.chunk_future import PARTIAL
from flask_execute.chunk_ids import call_id
from flask_execute.refs import resolve
from flask_execute.runtime import RUN_CHUNK
from flask_execute.tasks import CHUNK_ATTRIBUTE
from flask_execute.wire import SKIPPED

if TYPE_CHECKING:
    import celery

    from flask_execute.runtime import AppState

#: Seconds between two partial reports of a long chunk (the outcomes of the calls done
#: so far), which are also when it looks again for cancelled calls.
REPORT_INTERVAL = 0.5


def register_chunk_task(state: AppState) -> celery.Task:
    """Register the task that runs chunks of ``map`` calls on ``state``'s app."""

    def run_chunk(task: celery.Task, token: str, after: list[str] | None = None) -> dict[str, str]:
        wire, config = state.wire, state.app.config
        chunk_id = str(task.request.id)
        # Verified (bound to this id, fresh) before anything is unpickled, as a call is.
        fn, kwargs, calls = wire.unpack_calls(
            token, task_id=chunk_id, max_age=config["CELERY_TOKEN_MAX_AGE"]
        )
        limit = config["CELERY_MAX_PAYLOAD"]
        ids = [call_id(chunk_id, i) for i in range(len(calls))]
        # In eager mode every Future is done before anyone could cancel a call.
        marks = None if task.request.is_eager else CancelMarks(task.backend)
        cancelled = marks.read(ids) if marks else set()
        outcomes: list[bytes] = []
        reported, last = 0, time.monotonic()
        request = task.request
        for index, data in enumerate(calls):
            if ids[index] in cancelled:
                outcomes.append(SKIPPED)
                continue
            request.id = ids[index]
            setattr(request, CHUNK_ATTRIBUTE, chunk_id)
            try:
                outcomes.append(_run_call(state, task, fn, data, kwargs, limit, after is not None))
            finally:
                request.id = chunk_id
                setattr(request, CHUNK_ATTRIBUTE, None)
            if outcomes[-1] == SKIPPED and marks is not None:
                # A cancelled call: the calls after it may well be cancelled too.
                cancelled |= marks.read(ids[index + 1 :])
            if index + 1 < len(calls) and time.monotonic() - last >= REPORT_INTERVAL:
                meta = wire.pack_outcomes(reported, outcomes[reported:], task_id=chunk_id)
                task.update_state(task_id=chunk_id, state=PARTIAL, meta=meta)
                reported = len(outcomes)
                if marks is not None:
                    cancelled |= marks.read(ids[index + 1 :])
                last = time.monotonic()
        return wire.pack_outcomes(0, outcomes, task_id=chunk_id)

    register = state.celery_app.task(
        name=RUN_CHUNK, bind=True, typing=False, shared=False, lazy=False, runs_hook_itself=True
    )
    task: celery.Task = register(run_chunk)
    return task


def _run_call(
    state: AppState,
    task: celery.Task,
    fn: Any,
    data: bytes,
    kwargs: dict[str, Any],
    limit: int | None,
    refs: bool,
) -> bytes:
    wire = state.wire
    try:
        args, own = wire.load(data)
        given = {**kwargs, **own} if own else kwargs
        if refs:  # Futures among the arguments: their results, read from the backend
            args, given = resolve(state, args, given)
        value = state.pm.run_task(app=state.app, task=task, run=lambda: fn(*args, **given))
    except TaskCancelled:
        return SKIPPED
    except Exception as exc:
        return wire.failure(exc, limit)
    return wire.outcome(value, limit)
