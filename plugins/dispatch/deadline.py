"""The time budget of one send, and what a failed publish may have left behind.

A send has a deadline of ``CELERY_SUBMIT_TIMEOUT``. Every socket operation is bounded
by the socket timeouts the plugin sets (a quarter of it), and kombu's own retry loops
ask :func:`on_retry` before each new attempt: no attempt starts that could end past the
deadline, and none follows a failure after which the message may already be in the
broker (retrying then could deliver it twice).
"""

from __future__ import annotations

import contextvars
import errno
import re
import socket
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kombu import Producer

    from flask_execute.runtime import AppState


class GiveUp(Exception):
    """Raised from kombu's retry loop to end it; wraps the failure that ended it."""


def limits(state: AppState) -> tuple[float | None, Mapping[str, Any]]:
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


class Deadline:
    """The time budget of one send, consulted by kombu before every retry.

    :param timeout: ``CELERY_SUBMIT_TIMEOUT``.
    :param io: the longest one socket operation may take (``None``: a quarter of
        ``timeout``).
    :param policy: Celery's publish retry policy.
    """

    def __init__(self, timeout: float, io: float | None, policy: Mapping[str, Any]) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        self.end = self.started + timeout
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
            errback=on_retry,
            max_retries=self.policy.get("max_retries"),
            interval_start=self.policy.get("interval_start", 0),
            interval_step=self.policy.get("interval_step", 0.2),
            interval_max=self.policy.get("interval_max", 0.5),
        )
        _ = producer.channel  # opens the channel now, before anything is sent

    def on_retry(self, exc: BaseException, interval: float) -> None:
        if self.publishing:  # the first failure since the message left
            self.landed = may_have_landed(exc)
            if self.landed:
                raise GiveUp(exc)  # a second publish could deliver it twice
            # kombu retries a channel error at once; any other reconnects first, and
            # on_revive marks the publish that follows.
            self.publishing = isinstance(exc, self.channel_errors)
        # A retry costs a connection attempt then the publish: each one socket timeout.
        if time.monotonic() + interval + 2 * self.io > self.end:
            raise GiveUp(exc)


DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "flask_execute_deadline", default=None
)


def on_retry(exc: BaseException, interval: float) -> None:
    # kombu keeps a publish's retry policy in the connection's transport options and
    # reuses its errback later, so it reads the current send's deadline, if any.
    deadline = DEADLINE.get()
    if deadline is not None:
        deadline.on_retry(exc, float(interval or 0))


def on_revive(channel: Any) -> None:
    deadline = DEADLINE.get()
    if deadline is not None:  # reconnected: kombu publishes the message again
        deadline.publishing = True


#: OS errors that mean no connection was made, so nothing can have been sent.
_NOT_CONNECTED = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
#: redis-py's errors for a command the broker refused or that never left (named, to
#: spare importing redis here).
_REFUSED = {"ResponseError", "BusyLoadingError", "AuthenticationError", "DataError"}


def may_have_landed(exc: BaseException) -> bool:
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


def batch_landed(exc: BaseException, producer: Producer, count: int) -> int:
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
