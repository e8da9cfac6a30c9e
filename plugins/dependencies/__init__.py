"""Default plugin ``dependencies``: calls that take Futures as arguments wait for them.

``celery.submit(g, f)`` with ``f`` a Future: the call is kept in the result backend's
Redis until ``f``'s task ends (:mod:`.waiting`), then published, and the worker passes
``f``'s result in its place (:func:`flask_execute.refs.resolve`). No thread waits per
call, and the dependency lives in Redis, not in the web process. The call is published
by the first to see its last input end:

- the web process that holds the input's Future, as soon as the result arrives;
- the worker that ran the input, when the input itself waited for others (so a chain
  runs on from worker to worker);
- otherwise a sweep in every worker's main process, once a second (on a thread of its
  own), which also renews the keys of calls still waiting.

A cancelled call that still waits is taken back from Redis and stored ``REVOKED``
(this plugin answers :func:`~flask_execute.hookspecs.flask_execute_cancel_task` first
for such a call).

Blocked, a call with a Future among its arguments fails at ``submit`` with
:exc:`~flask_execute.ConfigurationError`, naming this plugin; nothing is sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import bootsteps, signals, states

from flask_execute.errors import BrokerUnavailable, ConfigurationError
from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState

from .waiting import Waiting

if TYPE_CHECKING:
    from celery.worker.consumer import Consumer
    from flask import Flask

    from flask_execute.futures import Future
    from flask_execute.runtime import Message

logger = logging.getLogger("flask_execute")

#: Seconds between two sweeps of a worker for calls whose inputs all ended unseen.
SWEEP_INTERVAL = 1.0


def waiting_calls(state: AppState) -> Waiting:
    """The waiting calls of ``state``'s application (made once per process).

    :raises ConfigurationError: the result backend is not Redis.
    """
    found: Waiting | None = state.plugin_data.get("dependencies")
    if found is None:
        from celery.backends.redis import RedisBackend  # loaded with the backend anyway

        if not isinstance(state.celery_app.backend, RedisBackend):
            raise ConfigurationError(
                "a Future passed as an argument needs a Redis result backend, which "
                "keeps the call until its inputs end; set CELERY_RESULT_BACKEND to a "
                "redis:// URL, or pass the result (future.result()) instead; nothing "
                "was sent"
            )
        if state.celery_app.conf.result_serializer != "json":
            raise ConfigurationError(
                "a Future passed as an argument needs results stored as JSON, which the "
                "result backend's Redis reads to tell which inputs ended; remove "
                "CELERY_RESULT_SERIALIZER (JSON is the default); nothing was sent"
            )
        found = state.plugin_data["dependencies"] = Waiting(state)
    return found


@hookimpl(trylast=True)
def flask_execute_send_after(app: Flask, messages: Sequence[Message]) -> list[Future]:
    state = AppState.of(app)
    keeper = waiting_calls(state)
    futures = [m.make_future(app, state.pm) for m in messages]
    for message, future in zip(messages, futures, strict=True):
        message.future = future
        state.futures.track(future)  # before anyone may publish it
    try:
        now = [m for m in messages if keeper.register(m)]
    except Exception as exc:
        for message in messages:
            state.futures.withdraw(message.task_id)
        raise BrokerUnavailable(
            f"the result backend did not keep the call(s) that wait for Futures ({exc}); "
            "nothing was sent",
            task_ids=[m.task_id for m in messages],
            maybe_sent=[],
        ) from exc
    for message in now:  # every input had ended: sent as any call
        message.after = ()
    if now:
        state.send(now, hold=False)
    for message in messages:
        for task_id in message.after:
            _release_when_done(state, keeper, task_id)
    return futures


def _release_when_done(state: AppState, keeper: Waiting, task_id: str) -> None:
    """Once the input ``task_id`` ends here, publish what waited for it (off the result
    listener's thread)."""
    future = state.futures.pending(task_id)
    if future is None:
        return  # not followed here: its worker or a sweep publishes what waits

    def release() -> None:
        try:
            keeper.release(task_id)
        except Exception as exc:  # a worker's sweep publishes it later
            logger.warning("could not release the calls after %s: %s", task_id, exc)

    def on_change() -> None:
        # Not on a cancel here: the task may still be running; its stored end (REVOKED,
        # or an outcome) is what a worker's sweep waits for.
        if future.done() and not future.cancelled():
            state.futures.run_callback(release)

    future.subscribe(on_change)


# -- the worker's side -------------------------------------------------------------------


def _release_after(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
    """A call that waited for others ended (its outcome is stored by now): publish what
    waits for it in turn, so that a chain runs on from worker to worker."""
    call_kwargs = kwargs.get("kwargs") or {}
    if not call_kwargs.get("after") or kwargs.get("state") not in states.READY_STATES:
        return
    state: AppState | None = getattr(getattr(sender, "app", None), "flask_execute_state", None)
    if state is None or task_id is None or state.eager or not state.pm.has_plugin("dependencies"):
        return
    try:
        waiting_calls(state).release(task_id)
    except Exception as exc:  # the sweep publishes them later
        logger.warning("could not release the calls after %s: %s", task_id, exc)


signals.task_postrun.connect(_release_after, weak=False)


class SweepWaiting(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker step: publishes, every :data:`SWEEP_INTERVAL` seconds, the calls whose
    inputs all ended while no process that could release them saw it. On a thread of
    its own, so that a slow backend never holds up the worker's consumer."""

    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, c: Consumer) -> None:
        state: AppState | None = getattr(c.app, "flask_execute_state", None)
        if state is None or state.eager:
            return
        try:
            keeper = waiting_calls(state)
        except ConfigurationError:  # no Redis result backend: no call ever waits
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(keeper,), name="flask_execute-sweep", daemon=True
        )
        self._thread.start()

    def stop(self, c: Consumer) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(SWEEP_INTERVAL * 5)

    shutdown = stop

    def _run(self, keeper: Waiting) -> None:
        failing = False
        while not self._stop.wait(SWEEP_INTERVAL):
            try:
                keeper.sweep()
            except Exception as exc:  # the backend is down: look again next time
                if not failing:
                    logger.warning("could not sweep the waiting calls: %s", exc)
                failing = True
                continue
            failing = False


@hookimpl(tryfirst=True)
def flask_execute_cancel_task(app: Flask, task_id: str) -> bool | None:
    # A call still waiting for its inputs is taken back at once (stored REVOKED), and
    # never published; any other goes on to the 'cancel' plugin.
    state = AppState.of(app)
    if state.eager:
        return None
    try:
        return waiting_calls(state).withdraw(task_id) or None
    except ConfigurationError:  # no call waits with this backend
        return None
    except Exception as exc:  # the backend is down: the 'cancel' plugin marks it
        logger.warning("could not look for %s among waiting calls: %s", task_id, exc)
        return None


@hookimpl
def flask_execute_init_app(app: Flask) -> None:
    AppState.of(app).celery_app.steps["consumer"].add(SweepWaiting)
