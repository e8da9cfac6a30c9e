"""Default plugin ``dispatch``: publish through Celery's broker, run task bodies, and
listen for results.

Owns ``CELERY_SUBMIT_TIMEOUT`` (and the broker and backend timeouts derived from it)
and ``CELERY_RESULT_POLL_INTERVAL``. Blocked, ``init_app`` fails naming the hooks left
without an answer (sending, running, listening).

A send has a deadline of ``CELERY_SUBMIT_TIMEOUT``. Every socket operation is bounded
by the socket timeouts set here (a quarter of it), and kombu's own retry loops ask
:func:`_on_retry` before each new attempt: no attempt starts that could end past the
deadline, and none follows a failure after which the message may already be in the
broker (retrying then could deliver it twice).
"""

from __future__ import annotations

import contextvars
import errno
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import kombu.exceptions
from celery.utils.time import maybe_make_aware
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from flask_execute.config import require_seconds
from flask_execute.errors import BrokerUnavailable, ConfigurationError
from flask_execute.listener import PollingResultSource, RedisResultSource, ResultSource
from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState

if TYPE_CHECKING:
    import celery
    from flask import Flask
    from kombu import Producer

    from flask_execute.futures import Future
    from flask_execute.runtime import Message

logger = logging.getLogger("flask_execute")

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
    # never answering) cannot hold submit() past it; see _Deadline for the retries.
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
    deadline = _Deadline(timeout, *_limits(state))
    token = _DEADLINE.set(deadline)
    try:
        with state.celery_app.producer_or_acquire() as producer:
            conn = producer.connection
            deadline.channel_errors = tuple(conn.channel_errors)
            errors = (OperationalError, BrokerUnavailable, _GiveUp, *conn.connection_errors)
            errors += deadline.channel_errors
            errors += _BATCH_ERRORS
            try:
                if len(messages) > 1 and getattr(producer, "supports_batch_publish", False):
                    return _send_batch(state, producer, messages, deadline)
                return [_send_one(state, producer, message, deadline) for message in messages]
            except errors as exc:
                raise _unavailable(state, messages, deadline, exc) from exc
    finally:
        _DEADLINE.reset(token)


def _send_one(state: AppState, producer: Producer, message: Message, deadline: _Deadline) -> Future:
    """Publish one message under the send's deadline; its Future is tracked first, so
    that a result can never arrive before anyone waits for it."""
    task_id = message.task_id
    future = message.make_future(state.app, state.pm)
    state.futures.track(future)  # may start the result source: BrokerUnavailable
    options = dict(message.options)
    _warn_if_redelivered(state.celery_app, options)
    policy = {**options.pop("retry_policy", {}), "errback": _on_retry, "on_revive": _on_revive}
    try:
        deadline.connect(producer)
        deadline.publishing = True
        message.task.publish(
            message.args,
            message.kwargs,
            task_id=task_id,
            producer=producer,
            retry_policy=policy,
            **options,
        )
    except BaseException as exc:
        if deadline.publishing:  # failed without a retry (none left, or none allowed)
            deadline.landed = _may_have_landed(exc)
        if not deadline.landed:
            state.futures.withdraw(task_id)
        raise
    finally:
        deadline.publishing = False
    deadline.sent.append(task_id)
    return future


#: kombu's error for a publish batch that failed (kombu >= 5.7; none before).
_BATCH_ERRORS: tuple[type[BaseException], ...] = tuple(
    e for e in (getattr(kombu.exceptions, "BatchPublishError", None),) if e is not None
)


def _send_batch(
    state: AppState, producer: Producer, messages: Sequence[Message], deadline: _Deadline
) -> list[Future]:
    """Publish several messages in one round trip (kombu's publish batch: one Redis
    pipeline). Nothing leaves before the flush: a failure while the batch fills sends
    none of them; after a failed flush, :func:`_batch_landed` says which may be in."""
    futures: list[Future] = []
    # Large enough that kombu never flushes on its own half-way (a message is one LPUSH,
    # plus one PEXPIRE per priority step on a queue with an expiry).
    with producer.batch(max_size=16 * len(messages) + 16) as batch:
        try:
            for message in messages:
                futures.append(_send_one(state, producer, message, deadline))
            buffered, deadline.sent = deadline.sent, []
            deadline.publishing = True
            batch.flush()
        except BaseException as exc:
            landed = _batch_landed(exc, producer, len(messages)) if deadline.publishing else 0
            deadline.sent, deadline.landed = [m.task_id for m in messages[:landed]], False
            for message in messages[landed:]:
                state.futures.withdraw(message.task_id)
            raise
        finally:
            deadline.publishing = False
        deadline.sent = buffered
    return futures


class _GiveUp(Exception):
    """Raised from kombu's retry loop to end it; wraps the failure that ended it."""


def _limits(state: AppState) -> tuple[float | None, Mapping[str, Any]]:
    """The broker's longest socket operation and the publish retry policy, read from
    Celery's configuration once per application (a read there costs microseconds)."""
    cached = state.plugin_data.get("dispatch")
    if cached is None:
        conf = state.celery_app.conf
        transport = conf.broker_transport_options or {}
        io = [transport.get("socket_timeout"), transport.get("socket_connect_timeout")]
        longest = max((float(t) for t in io if t), default=None)
        cached = state.plugin_data["dispatch"] = (longest, conf.task_publish_retry_policy or {})
    return cached  # type: ignore[no-any-return]


class _Deadline:
    """The time budget of one send, consulted by kombu before every retry.

    :param timeout: ``CELERY_SUBMIT_TIMEOUT``.
    :param io: the longest one socket operation may take (``None``: a quarter of
        ``timeout``).
    :param policy: Celery's publish retry policy.
    """

    def __init__(self, timeout: float, io: float | None, policy: Mapping[str, Any]) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + timeout
        #: The longest one socket operation may take.
        self.io = io if io is not None else timeout / 4
        self.policy = policy
        self.publishing = False  # the current message may be on its way to the broker
        self.landed = False  # a failure left a message that may still arrive
        self.sent: list[str] = []  # published and confirmed
        self.channel_errors: tuple[type[BaseException], ...] = ()  # the transport's

    def connect(self, producer: Producer) -> None:
        """Connect the producer (a no-op when it is), retrying until the deadline."""
        producer.connection.ensure_connection(
            errback=_on_retry,
            max_retries=self.policy.get("max_retries"),
            interval_start=self.policy.get("interval_start", 0),
            interval_step=self.policy.get("interval_step", 0.2),
            interval_max=self.policy.get("interval_max", 0.5),
        )
        _ = producer.channel  # opens the channel now, before anything is sent

    def on_retry(self, exc: BaseException, interval: float) -> None:
        if self.publishing:  # the first failure since the message left
            self.landed = _may_have_landed(exc)
            if self.landed:
                raise _GiveUp(exc)  # a second publish could deliver it twice
            # kombu retries a channel error at once; any other reconnects first, and
            # _on_revive marks the publish that follows.
            self.publishing = isinstance(exc, self.channel_errors)
        # A retry costs a connection attempt then the publish: each one socket timeout.
        if time.monotonic() + interval + 2 * self.io > self.end:
            raise _GiveUp(exc)


_DEADLINE: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "flask_execute_deadline", default=None
)


def _on_retry(exc: BaseException, interval: float) -> None:
    # kombu keeps a publish's retry policy in the connection's transport options and
    # reuses its errback later, so it reads the current send's deadline, if any.
    deadline = _DEADLINE.get()
    if deadline is not None:
        deadline.on_retry(exc, float(interval or 0))


def _on_revive(channel: Any) -> None:
    deadline = _DEADLINE.get()
    if deadline is not None:  # reconnected: kombu publishes the message again
        deadline.publishing = True


#: OS errors that mean no connection was made, so nothing can have been sent.
_NOT_CONNECTED = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
#: redis-py's errors for a command the broker refused or that never left (named, to
#: spare importing redis here).
_REFUSED = {"ResponseError", "BusyLoadingError", "AuthenticationError", "DataError"}


def _may_have_landed(exc: BaseException) -> bool:
    """Whether a failed publish may still have put its message in the broker: true
    unless the failure proves nothing reached it (no connection was made, or the
    broker refused the command)."""
    return not any(_never_sent(seen) or _refused(seen) for seen in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _never_sent(exc: BaseException) -> bool:
    return (
        isinstance(exc, socket.gaierror)
        or (isinstance(exc, OSError) and exc.errno in _NOT_CONNECTED)
        or str(exc) == "Timeout connecting to server"  # redis-py's connect timeout
    )


def _refused(exc: BaseException) -> bool:
    return not _REFUSED.isdisjoint(c.__name__ for c in type(exc).__mro__)


#: redis-py's note on the first command of a pipeline that Redis refused.
_PIPELINE_ERROR = re.compile(r"Command # (\d+) ")


def _batch_landed(exc: BaseException, producer: Producer, count: int) -> int:
    """How many of the ``count`` messages of a failed batch may be in the broker.

    Nothing, when no connection was made. When Redis refused a command, the messages
    before it: Redis refuses writes for server-wide reasons (memory, a read-only
    replica, authentication), so it refused the rest of the pipeline too (counted in
    messages only when each is one command: no queue with an expiry). Otherwise, all.
    """
    for seen in _causes(exc):
        if _never_sent(seen):
            return 0
        found = _PIPELINE_ERROR.match(str(seen)) if _refused(seen) else None
        if found and not getattr(producer.channel, "_expires", None):
            return min(count, int(found.group(1)) - 1)
    return count


def _unavailable(
    state: AppState, messages: Sequence[Message], deadline: _Deadline, exc: BaseException
) -> BrokerUnavailable:
    """The error of a failed send: what may still arrive, and what to do about it."""
    ids = [m.task_id for m in messages]
    done = len(deadline.sent)
    maybe = deadline.sent + ([ids[done]] if deadline.landed and done < len(ids) else [])
    cause = exc.args[0] if isinstance(exc, _GiveUp) and exc.args else exc
    if isinstance(exc, BrokerUnavailable):
        what = str(exc)
    else:
        url = maybe_sanitize_url(state.celery_app.conf.broker_url)
        what = (
            f"the broker at {url} did not answer in time ({cause}; CELERY_SUBMIT_TIMEOUT "
            f"is {deadline.timeout}s): start it, or set CELERY_BROKER_URL to one that runs"
        )
    if not maybe:
        outcome = "nothing was published (task ids in the error's task_ids)"
        if len(ids) == 1:
            outcome = f"nothing was published (task id {ids[0]})"
    elif len(maybe) == 1 and len(ids) == 1:
        outcome = (
            f"the message may still arrive; its task id is {maybe[0]}: "
            f"celery.get({maybe[0]!r}) or revoke it"
        )
    else:
        outcome = (
            f"{len(maybe)} of {len(ids)} messages may still arrive (task ids in the "
            "error's maybe_sent): celery.get(id) or revoke them; the rest were not published"
        )
    return BrokerUnavailable(f"{what}; {outcome}", task_ids=ids, maybe_sent=maybe)


_REDIS_SCHEMES = ("redis://", "rediss://", "sentinel://", "unix://", "socket://")


def _warn_if_redelivered(celery_app: celery.Celery, options: Mapping[str, Any]) -> None:
    """Warn when a countdown or eta outlives a Redis broker's visibility timeout: the
    waiting message would be handed to another worker too, and run twice."""
    if "countdown" not in options and "eta" not in options:
        return
    conf = celery_app.conf
    limit = (conf.broker_transport_options or {}).get("visibility_timeout")
    if limit is None or not str(conf.broker_url).startswith(_REDIS_SCHEMES):
        return
    delay = options.get("countdown")
    eta = options.get("eta")
    if isinstance(eta, datetime):
        delay = (maybe_make_aware(eta, celery_app.timezone) - celery_app.now()).total_seconds()
    if isinstance(delay, (int, float)) and delay > float(limit):
        logger.warning(
            "a countdown/eta of %.0fs is longer than the broker's visibility_timeout (%ss): "
            "Redis will hand the message to another worker after that time and the task "
            "may run twice. Raise CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'] "
            "above your longest countdown, or use a schedule",
            delay,
            limit,
        )


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
        # Half the submit budget for the subscription, the rest for the broker.
        timeout = float(app.config["CELERY_SUBMIT_TIMEOUT"]) / 2
        return RedisResultSource(state, timeout=timeout)
    return PollingResultSource(state, interval=float(app.config["CELERY_RESULT_POLL_INTERVAL"]))
