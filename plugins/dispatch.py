"""Default plugin ``dispatch``: publish through Celery's broker, run task bodies, and
listen for results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from celery.utils import uuid
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from flask_execute.errors import BrokerUnavailable
from flask_execute.listener import PollingResultSource, RedisResultSource, ResultSource
from flask_execute.markers import hookimpl

if TYPE_CHECKING:
    import celery
    from flask import Flask

    from flask_execute.futures import Future
    from flask_execute.runtime import AppState, Message


@hookimpl(trylast=True)
def flask_execute_send(state: AppState, messages: Sequence[Message]) -> list[Future]:
    futures: list[Future] = []
    celery_app = state.celery_app
    try:
        with celery_app.producer_or_acquire() as producer:
            for message in messages:
                task_id = uuid()
                future = state.pm.make_future(state, task_id, message.name)
                state.track(future)
                try:
                    message.task.publish(
                        message.args,
                        message.kwargs,
                        task_id=task_id,
                        producer=producer,
                        **message.options,
                    )
                except BaseException:
                    state.untrack(task_id)
                    raise
                futures.append(future)
    except OperationalError as exc:
        url = maybe_sanitize_url(celery_app.conf.broker_url)
        timeout = state.app.config["CELERY_SUBMIT_TIMEOUT"]
        raise BrokerUnavailable(
            f"cannot reach the broker at {url} (gave up after about {timeout}s: {exc}); "
            "start it, or set CELERY_BROKER_URL to a broker that runs"
        ) from exc
    return futures


@hookimpl(trylast=True)
def flask_execute_run_task(app: Flask, task: celery.Task, run: Callable[[], Any]) -> Any:
    return run()


@hookimpl(trylast=True)
def flask_execute_make_result_source(state: AppState) -> ResultSource:
    # Imported here: Celery's Redis backend pulls in redis.asyncio (~80 ms), and by now
    # the backend itself has loaded it anyway.
    from celery.backends.redis import RedisBackend

    backend = state.celery_app.backend
    if isinstance(backend, RedisBackend):
        return RedisResultSource(state, timeout=float(state.app.config["CELERY_SUBMIT_TIMEOUT"]))
    return PollingResultSource(
        state, interval=float(state.app.config["CELERY_RESULT_POLL_INTERVAL"])
    )
