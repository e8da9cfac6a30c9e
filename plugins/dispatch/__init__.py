"""Default plugin ``dispatch``: publish through Celery's broker, run task bodies, and
listen for results.

Owns ``CELERY_SUBMIT_TIMEOUT`` (and the broker and backend timeouts derived from it)
and ``CELERY_RESULT_POLL_INTERVAL``. Blocked, ``init_app`` fails naming the hooks left
without an answer (sending, running, listening).

A send has a deadline of ``CELERY_SUBMIT_TIMEOUT`` (see :mod:`.deadline`); messages are
published by :mod:`.sending`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celery.backends.base import DisabledBackend
from kombu.exceptions import OperationalError

from flask_execute.config import require_seconds
from flask_execute.errors import BrokerUnavailable, ConfigurationError
from flask_execute.listener import PollingResultSource, RedisResultSource, ResultSource
from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState

from .deadline import DEADLINE, Deadline, GiveUp, limits
from .publisher import publisher_for
from .sending import (
    BATCH_ERRORS,
    send_batch,
    send_one,
    send_through,
    unavailable,
)

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
    # Every blocking read or connect on the broker and the backend gives up after a
    # quarter of CELERY_SUBMIT_TIMEOUT, so that a stalled server (accepting connections,
    # never answering) cannot hold submit() past it; see Deadline for the retries.
    io = float(app.config["CELERY_SUBMIT_TIMEOUT"]) / 4
    settings.setdefault("broker_connection_timeout", io)
    settings.setdefault(
        "task_publish_retry_policy",
        {"max_retries": 10, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )
    transport = dict(settings.get("broker_transport_options") or {})
    transport.setdefault("socket_timeout", io)
    transport.setdefault("socket_connect_timeout", io)
    settings["broker_transport_options"] = transport
    settings.setdefault("redis_socket_timeout", io)
    settings.setdefault("redis_socket_connect_timeout", io)


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
    timeout = float(app.config["CELERY_SUBMIT_TIMEOUT"])
    deadline = Deadline(timeout, *limits(state))
    token = DEADLINE.set(deadline)
    try:
        # One message: through this thread's publisher, when the transport can batch.
        publisher = publisher_for(state) if len(messages) == 1 else None
        if publisher is not None:
            errors = _errors(publisher.connection, deadline)
            try:
                return [send_through(state, publisher, messages[0], deadline)]
            except errors as exc:
                raise unavailable(state, messages, deadline, exc) from exc
        with state.celery_app.producer_or_acquire() as producer:
            errors = _errors(producer.connection, deadline)
            try:
                if len(messages) > 1 and getattr(producer, "supports_batch_publish", False):
                    return send_batch(state, producer, messages, deadline)
                return [send_one(state, producer, message, deadline) for message in messages]
            except errors as exc:
                raise unavailable(state, messages, deadline, exc) from exc
    finally:
        DEADLINE.reset(token)


def _errors(conn: Any, deadline: Deadline) -> tuple[type[BaseException], ...]:
    """What a failed send raises, for this connection's transport."""
    deadline.channel_errors = tuple(conn.channel_errors)
    errors = (OperationalError, BrokerUnavailable, GiveUp, *conn.connection_errors)
    return errors + deadline.channel_errors + BATCH_ERRORS


@hookimpl(tryfirst=True)
def flask_execute_prepare_send(app: Flask) -> None:
    # Before the local services start for a send that could never have a Future.
    _require_backend(AppState.of(app))


def _require_backend(state: AppState) -> Any:
    """The application's result backend; refused when there is none (an ``amqp://``
    broker without ``CELERY_RESULT_BACKEND``, or the ``config`` plugin blocked)."""
    backend = state.celery_app.backend
    if isinstance(backend, DisabledBackend):
        raise ConfigurationError(
            "no result backend is configured, and futures need one: set "
            "CELERY_RESULT_BACKEND, e.g. to redis://localhost:6379/0 (the 'config' plugin "
            "defaults it only to a Redis broker's URL); nothing was sent"
        )
    return backend


@hookimpl(trylast=True)
def flask_execute_run_task(run: Callable[[], Any]) -> Any:
    return run()


@hookimpl(trylast=True)
def flask_execute_make_result_source(app: Flask) -> ResultSource:
    # Imported here: Celery's Redis backend pulls in redis.asyncio (~80 ms), and by now
    # the backend itself has loaded it anyway.
    from celery.backends.redis import RedisBackend

    state = AppState.of(app)
    backend = _require_backend(state)
    if isinstance(backend, RedisBackend):
        # Half the submit budget for the subscription, the rest for the broker.
        timeout = float(app.config["CELERY_SUBMIT_TIMEOUT"]) / 2
        return RedisResultSource(state, timeout=timeout)
    return PollingResultSource(state, interval=float(app.config["CELERY_RESULT_POLL_INTERVAL"]))
