"""Default plugin ``dispatch``: publish through Celery's broker, run task bodies, and
listen for results.

Owns ``CELERY_SUBMIT_TIMEOUT`` (and the broker timeouts derived from it) and
``CELERY_RESULT_POLL_INTERVAL``. Blocked, ``init_app`` fails naming the hooks left
without an answer (sending, running, listening).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from flask_execute.config import require_seconds
from flask_execute.errors import BrokerUnavailable, ConfigurationError
from flask_execute.listener import PollingResultSource, RedisResultSource, ResultSource
from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState

if TYPE_CHECKING:
    from flask import Flask

    from flask_execute.futures import Future
    from flask_execute.runtime import Message

KEYS: dict[str, Any] = {
    # Seconds submit() may spend reaching the broker before it raises BrokerUnavailable.
    "CELERY_SUBMIT_TIMEOUT": 10.0,
    # Seconds between polls of a result backend without pub/sub (not Redis).
    "CELERY_RESULT_POLL_INTERVAL": 0.01,
}


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(config: Mapping[str, Any]) -> None:
    require_seconds(config, "CELERY_SUBMIT_TIMEOUT", "CELERY_RESULT_POLL_INTERVAL")


@hookimpl
def flask_execute_configure_celery(app: Flask, settings: dict[str, Any]) -> None:
    # submit() must fail within CELERY_SUBMIT_TIMEOUT when the broker is down.
    timeout = float(app.config["CELERY_SUBMIT_TIMEOUT"])
    settings.setdefault("broker_connection_timeout", max(timeout / 4, 0.5))
    settings.setdefault(
        "task_publish_retry_policy",
        {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )
    settings.setdefault("redis_socket_connect_timeout", max(timeout / 4, 0.5))


@hookimpl
def flask_execute_init_app(app: Flask) -> None:
    state = AppState.of(app)
    if state.eager and not _others_send(state):
        raise ConfigurationError(
            "CELERY_ALWAYS_EAGER (task_always_eager) is on but no plugin runs tasks "
            "in-process: the 'eager' plugin is blocked by CELERY_DISABLED_PLUGINS. "
            "Remove it from there, or turn eager mode off; tasks are never published "
            "while eager mode is on"
        )


def _others_send(state: AppState) -> bool:
    here = state.pm.get_plugin("dispatch")
    return any(
        impl.plugin is not here and not (impl.wrapper or impl.hookwrapper)
        for impl in state.pm.hook.flask_execute_send.get_hookimpls()
    )


@hookimpl(trylast=True)
def flask_execute_send(app: Flask, messages: Sequence[Message]) -> list[Future]:
    state = AppState.of(app)
    if state.eager:  # never publish in eager mode, whatever the plugins say
        raise ConfigurationError(
            "eager mode is on but no plugin ran the task in-process; nothing was published"
        )
    futures: list[Future] = []
    celery_app = state.celery_app
    tracker = state.futures
    try:
        with celery_app.producer_or_acquire() as producer:
            for message in messages:
                task_id = message.task_id
                future = state.pm.make_future(app, task_id, message.name)
                tracker.track(future)
                try:
                    message.task.publish(
                        message.args,
                        message.kwargs,
                        task_id=task_id,
                        producer=producer,
                        **message.options,
                    )
                except BaseException:
                    tracker.untrack(task_id)
                    raise
                futures.append(future)
    except OperationalError as exc:
        url = maybe_sanitize_url(celery_app.conf.broker_url)
        timeout = app.config["CELERY_SUBMIT_TIMEOUT"]
        raise BrokerUnavailable(
            f"cannot reach the broker at {url} (gave up after about {timeout}s: {exc}); "
            "start it, or set CELERY_BROKER_URL to a broker that runs"
        ) from exc
    return futures


@hookimpl(trylast=True)
def flask_execute_run_task(run: Callable[[], Any]) -> Any:
    return run()


@hookimpl(trylast=True)
def flask_execute_make_result_source(app: Flask) -> ResultSource:
    # Imported here: Celery's Redis backend pulls in redis.asyncio (~80 ms), and by now
    # the backend itself has loaded it anyway.
    from celery.backends.base import DisabledBackend
    from celery.backends.redis import RedisBackend

    state = AppState.of(app)
    backend = state.celery_app.backend
    if isinstance(backend, DisabledBackend):
        raise ConfigurationError(
            "no result backend is configured, and futures need one: set "
            "CELERY_RESULT_BACKEND (the 'config' plugin defaults it to a Redis broker's "
            "URL); nothing was sent"
        )
    if isinstance(backend, RedisBackend):
        return RedisResultSource(state, timeout=float(app.config["CELERY_SUBMIT_TIMEOUT"]))
    return PollingResultSource(state, interval=float(app.config["CELERY_RESULT_POLL_INTERVAL"]))
