"""The chunk task: runs the calls of one ``celery.map`` chunk on a worker.

Each call runs through :func:`~flask_execute.hookspecs.flask_execute_run_task` as a
submitted function does (its own application context, ``current_task``), under its own
id: ``current_task.request.id`` is the call's id while it runs, so progress it reports
reaches that call's Future. One call's exception is that call's outcome; the rest of the
chunk still runs. Calls cancelled before they start are skipped; a call that ends after
its cancel was seen (``current_task.cancelled``) has the cancelled outcome.

A call with retries (``celery.options(retries=...).map``) is retried in place: it shares
its message with the other calls, so it cannot go back to the broker alone. Its Future
shows ``RETRY`` with the exception, the outcomes done so far are reported, and the call
waits out its backoff in the chunk (holding the worker slot) before it runs again;
eager mode does not wait, as Celery's eager retries do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import states

from flask_execute.cancelling import CancelMarks, TaskCancelled
from flask_execute.chunk_future import PARTIAL
from flask_execute.chunk_ids import call_id
from flask_execute.errors import time_limit_error
from flask_execute.refs import resolve
from flask_execute.retrying import RetryPolicy, unwrap
from flask_execute.runtime import RUN_CHUNK
from flask_execute.tasks import CHUNK_ATTRIBUTE, refusing, register_ours
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
        with refusing(task):
            fn, kwargs, calls = wire.unpack_calls(
                token, task_id=chunk_id, max_age=config["CELERY_TOKEN_MAX_AGE"]
            )
        fn, policy = unwrap(fn)
        limit = config["CELERY_MAX_PAYLOAD"]
        ids = [call_id(chunk_id, i) for i in range(len(calls))]
        # In eager mode every Future is done before anyone could cancel a call.
        marks = None if task.request.is_eager else CancelMarks(task.backend)
        cancelled = marks.read(ids) if marks else set()
        outcomes: list[bytes] = []
        reported, last = 0, time.monotonic()
        request = task.request

        def report() -> None:  # the outcomes done so far (a long chunk, a call waits)
            nonlocal reported, last
            if len(outcomes) > reported:
                meta = wire.pack_outcomes(reported, outcomes[reported:], task_id=chunk_id)
                task.update_state(task_id=chunk_id, state=PARTIAL, meta=meta)
                reported = len(outcomes)
            last = time.monotonic()

        for index, data in enumerate(calls):
            if ids[index] in cancelled:
                outcomes.append(SKIPPED)
                continue
            request.id = ids[index]
            setattr(request, CHUNK_ATTRIBUTE, chunk_id)
            try:
                retry = None if policy is None else _Retry(policy, marks, report)
                outcomes.append(
                    _run_call(state, task, fn, data, kwargs, limit, after is not None, retry)
                )
            finally:
                request.id = chunk_id
                setattr(request, CHUNK_ATTRIBUTE, None)
            if outcomes[-1] == SKIPPED and marks is not None:
                # A cancelled call: the calls after it may well be cancelled too.
                cancelled |= marks.read(ids[index + 1 :])
            if index + 1 < len(calls) and time.monotonic() - last >= REPORT_INTERVAL:
                report()
                if marks is not None:
                    cancelled |= marks.read(ids[index + 1 :])
        return wire.pack_outcomes(0, outcomes, task_id=chunk_id)

    return register_ours(state, RUN_CHUNK, run_chunk)


class _Retry:
    """How one call of a chunk is retried in place: its policy, the cancel marks to
    look at after a wait, and how to report the chunk's outcomes before one."""

    def __init__(
        self, policy: RetryPolicy, marks: CancelMarks | None, report: Callable[[], None]
    ) -> None:
        self.policy = policy
        self.marks = marks
        self.report = report

    def wait(self, state: AppState, task: celery.Task, error: BaseException, tries: int) -> bool:
        """Show ``error`` as the call's ``RETRY`` and wait out the backoff; ``False``
        when the call was cancelled meanwhile."""
        call = str(task.request.id)
        packed = state.wire.pack_error(
            error, task_id=call, limit=state.app.config["CELERY_MAX_PAYLOAD"]
        )
        task.update_state(task_id=call, state=states.RETRY, meta=packed)
        if task.request.is_eager:
            return True
        self.report()
        until = time.monotonic() + self.policy.delay(tries)
        while (left := until - time.monotonic()) > 0:  # a cancel ends the wait early
            time.sleep(min(left, REPORT_INTERVAL))
            if self.marks is not None and self.marks.read([call]):
                return False
        return True


def _run_call(
    state: AppState,
    task: celery.Task,
    fn: Any,
    data: bytes,
    kwargs: dict[str, Any],
    limit: int | None,
    refs: bool,
    retry: _Retry | None = None,
) -> bytes:
    wire = state.wire
    tries = 0
    while True:
        try:
            value = _call(state, task, fn, data, kwargs, refs)
        except TaskCancelled:
            return SKIPPED
        except Exception as exc:
            error = time_limit_error(exc, task.request.timelimit)
            if retry is None or not retry.policy.retries_for(error, tries):
                return wire.failure(error, limit)
            if not retry.wait(state, task, error, tries):
                return SKIPPED
            tries += 1
            continue
        return wire.outcome(value, limit)


def _call(
    state: AppState, task: celery.Task, fn: Any, data: bytes, kwargs: dict[str, Any], refs: bool
) -> Any:
    args, own = state.wire.load(data)
    given = {**kwargs, **own} if own else kwargs
    if refs:  # Futures among the arguments: their results, read from the backend
        args, given = resolve(state, args, given)
    return state.pm.run_task(app=state.app, task=task, run=lambda: fn(*args, **given))
