"""Default plugin ``cancel``: a cancelled task may stop by itself, then it is terminated.

``future.cancel()`` marks the task cancelled in the result backend
(:mod:`flask_execute.cancelling`), with the time after which it may be terminated:
now plus ``CELERY_CANCEL_GRACE``, and broadcasts :data:`COMMAND`: Celery's revoke
without ``terminate``, so that a queued task never runs. While the task runs,
``current_task.cancelled`` turns true, so a long loop can stop and clean up; once it
returns or raises, its state is ``REVOKED``. A step in each worker's main process
(:class:`~.terminating.TerminateCancelled`) terminates, through Celery's own revoke
path, a task still running past its time.

Blocked, ``cancel()`` terminates a running task at once (Celery's
``revoke(terminate=True)``) and ``current_task.cancelled`` is always false.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from celery import signals
from celery.worker.control import control_command
from celery.worker.control import revoke as celery_revoke

from flask_execute.cancelling import CancelMarks, CancelWatch, TaskCancelled, watching
from flask_execute.errors import ConfigurationError
from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState
from flask_execute.tasks import CHUNK_ATTRIBUTE

from . import terminating

if TYPE_CHECKING:
    import celery
    from flask import Flask

logger = logging.getLogger("flask_execute")

KEYS: dict[str, Any] = {
    # Seconds a cancelled task may run on to stop by itself before it is terminated
    # (0: terminate at once).
    "CELERY_CANCEL_GRACE": 10.0,
}

#: The remote control command ``future.cancel()`` broadcasts (see :func:`cancel_command`).
COMMAND = "flask_execute_cancel"

#: Set on a task's request by the worker's main process when it receives the message:
#: how many cancels it had received by then (see :func:`_may_be_cancelled`).
STAMP = "flask_execute_cancels"


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(config: Mapping[str, Any]) -> None:
    grace = config["CELERY_CANCEL_GRACE"]
    number = isinstance(grace, (int, float)) and not isinstance(grace, bool)
    if not number or not math.isfinite(grace) or grace < 0:
        raise ConfigurationError(
            "CELERY_CANCEL_GRACE must be a number of seconds, 0 or more (0 terminates "
            f"a cancelled task at once), not {grace!r}"
        )


@hookimpl
def flask_execute_init_app(app: Flask) -> None:
    AppState.of(app).celery_app.steps["consumer"].add(terminating.TerminateCancelled)


# -- the cancelling side -----------------------------------------------------------------


@hookimpl(trylast=True)
def flask_execute_cancel_task(app: Flask, task_id: str) -> bool:
    state = AppState.of(app)
    control = state.celery_app.control
    marks = CancelMarks(state.celery_app.backend)
    grace = float(app.config["CELERY_CANCEL_GRACE"])
    if not marks.supported:  # a database backend holds no marks: no grace either
        control.revoke(task_id, terminate=True)
        return True
    marks.mark(task_id, time.time() + grace)
    if broadcasts(state):
        arguments = {"task_id": task_id, "terminate": grace == 0}
        try:
            control.broadcast(COMMAND, arguments=arguments)
        except Exception as exc:  # the mark is written: the task stops or is terminated
            logger.warning("could not broadcast the cancel of %s: %s", task_id, exc)
    # Without a broadcast the mark alone stops the task, at its start or after its grace.
    return True


def broadcasts(state: AppState) -> bool:
    """Whether the broker's transport reaches every worker (a fanout exchange)."""
    return _transport(state)["broadcasts"]


def revokes_in_time(state: AppState) -> bool:
    """Whether a cancel reaches a worker before it starts a task that waits there.

    Needs broadcasts and an event loop (Redis, RabbitMQ). Without an event loop (the
    filesystem transport) a worker whose processes are all busy blocks on the message
    it holds, and reads the cancel only once it has handed that message to a process.
    """
    return _transport(state)["in time"]


def _transport(state: AppState) -> dict[str, bool]:
    # Found once per application; only the transport object is made, no connection.
    data: dict[str, bool] = state.plugin_data.setdefault("cancel", {})
    if not data:
        with state.celery_app.connection_for_write() as conn:
            implements = conn.transport.implements
        data["broadcasts"] = "fanout" in implements.exchange_type
        data["in time"] = data["broadcasts"] and bool(implements.asynchronous)
    return data


def cancel_command(state: Any, task_id: str, terminate: bool = False) -> Any:
    """Celery's revoke, and a note for the pool processes that a cancel came in.

    A worker hands the messages it prefetched to its pool as they arrive, and the pool
    starts them as processes free up, without a look at the revoked ids: such a task
    would run after all. Its process reads the task's mark before it starts it when a
    cancel came in since the message did (:func:`_may_be_cancelled`).
    """
    reply = celery_revoke(state, task_id, terminate=terminate)
    terminating.cancels_received.add()
    return reply


control_command(
    name=COMMAND, args=[("task_id", str), ("terminate", bool)], signature="<task_id> [terminate]"
)(cancel_command)


def _stamp(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    """Note on a message received by this worker how many cancels came in before it."""
    counter = terminating.cancels_received
    if request is not None and counter.shared:
        request.request_dict[STAMP] = counter.value


signals.task_received.connect(_stamp, weak=False)


# -- the task's side ---------------------------------------------------------------------


@hookimpl(wrapper=True)
def flask_execute_run_task(app: Flask, task: celery.Task) -> Generator[None, Any, Any]:
    request = task.request
    marks = CancelMarks(task.backend)
    if request.is_eager or request.called_directly or not marks.supported:
        return (yield)
    watch = CancelWatch(marks, str(request.id))
    if _may_be_cancelled(app, request) and watch.read():
        _end_cancelled(task)
    with watching(watch):
        try:
            result = yield
        except Exception:
            if watch.finished():
                _end_cancelled(task)
            raise
    if watch.finished():
        _end_cancelled(task)
    return result


def _may_be_cancelled(app: Flask, request: Any) -> bool:
    """Whether a task about to start may have been cancelled without the worker
    dropping it, so its mark must be read first (the only backend read at a start).

    A call of a ``map``: no, its chunk read the marks. Where a cancel may reach the
    worker too late (:func:`revokes_in_time`): yes. Otherwise only if a cancel came in
    since the worker received the message (it could have been waiting for a free pool
    process).
    """
    if getattr(request, CHUNK_ATTRIBUTE, None):
        return False
    if not revokes_in_time(AppState.of(app)):
        return True
    stamp = getattr(request, STAMP, None)
    counter = terminating.cancels_received
    return stamp is None or not counter.shared or stamp != counter.value


def _end_cancelled(task: celery.Task) -> NoReturn:
    """Store ``REVOKED`` for a cancelled run and end it; a call of a ``map`` gets the
    cancelled outcome from its chunk instead."""
    request = task.request
    if not getattr(request, CHUNK_ATTRIBUTE, None):
        store = not task.ignore_result or task.store_errors_even_if_ignored
        task.backend.mark_as_revoked(
            str(request.id), "cancelled", request=request, store_result=store
        )
    raise TaskCancelled("cancelled")
