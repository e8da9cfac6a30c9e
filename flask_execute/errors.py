"""Exception types raised by flask_execute."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

if TYPE_CHECKING:
    from flask_execute.pool import FuturePool


class ExecuteError(Exception):
    """Base class of every error raised by flask_execute itself."""


class ConfigurationError(ExecuteError, ValueError):
    """A configuration value is wrong; the message names the key and the fix."""


class SerializationError(ExecuteError, TypeError):
    """A function, an argument or a result cannot be serialized for the wire."""


class SignatureError(ExecuteError):
    """A payload's signature does not match any configured key.

    The payload was forged, tampered with, or signed with a key this process does not
    know (set ``CELERY_SIGNING_KEYS`` or ``SECRET_KEY`` identically on every host).
    It is never unpickled.
    """


class BrokerUnavailable(ExecuteError, ConnectionError):
    """The broker (or the result backend) did not answer within
    ``CELERY_SUBMIT_TIMEOUT``.

    The message says whether anything may still arrive. When ``may_arrive`` is true a
    message was handed to the broker without a confirmation: it may run. Its Future is
    kept, so ``celery.get(task_id)`` waits for it and ``celery.get(task_id).cancel()``
    revokes it.

    :ivar task_ids: the task ids of every call of the failed ``submit``/``map``.
    :ivar may_arrive: whether any of them may still run.
    :ivar maybe_sent: those that may still run (published before the failure, or left
        unconfirmed by it); empty when nothing was published.
    :ivar pool: for a ``map``, the :class:`~flask_execute.FuturePool` of every call:
        the calls never sent fail with this error, the others may still finish.
    """

    def __init__(
        self,
        message: str,
        *,
        task_ids: Sequence[str] = (),
        maybe_sent: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.task_ids = tuple(task_ids)
        self.maybe_sent = tuple(maybe_sent)
        self.may_arrive = bool(self.maybe_sent)
        self.pool: FuturePool | None = None


class UnknownTaskError(ExecuteError, LookupError):
    """No task with this id was ever submitted, or its result has expired."""


class ServiceError(ExecuteError, RuntimeError):
    """A local service (worker, flower, beat) failed to start or stop."""


class RemoteTraceback(Exception):
    """Carries the worker's formatted traceback as the ``__cause__`` of a task error."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class RemoteError(Exception):
    """What a task raises on the wire: a signed envelope holding the real exception.

    Celery stores it as JSON (type name, module, arguments); the submitting side opens
    the envelope and re-raises the original exception. ``args`` are
    ``(envelope, summary)``; the summary is readable in Flower and logs.
    """

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()

    def __repr__(self) -> str:  # what Celery logs: the summary, not the envelope
        return f"RemoteError({str(self)!r})"


class TaskFailed(ExecuteError):
    """A task failed with an exception that could not be rebuilt on this side.

    :ivar exc_type: the dotted name of the original exception type.
    """

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type


class DependencyFailed(ExecuteError):
    """An input of a call (a Future passed as its argument) failed or was cancelled, so
    the call did not run.

    The message names the input. The input's own exception is :attr:`error` and the
    ``__cause__``, with the input's worker traceback as its own cause.

    :ivar error: the input's exception (``None`` for a cancelled input).
    """

    def __init__(
        self, message: str, error: BaseException | None = None, traceback: str | None = None
    ) -> None:
        super().__init__(message, error, traceback)
        self.error = error
        if error is not None:  # also when rebuilt on the other side, from these args
            if traceback is not None and error.__cause__ is None:
                error.__cause__ = RemoteTraceback(traceback)
            self.__cause__ = error

    def __str__(self) -> str:
        return str(self.args[0])


class TimeLimitError(ExecuteError):
    """A call ran past its ``time_limit`` or ``soft_time_limit``.

    Catch one of the two subclasses, or Celery's own types, which they also are:
    :class:`HardTimeLimitError` is a :exc:`celery.exceptions.TimeLimitExceeded`,
    :class:`SoftTimeLimitError` a :exc:`celery.exceptions.SoftTimeLimitExceeded`.

    :ivar limit: ``"hard"`` or ``"soft"``.
    :ivar seconds: the limit, in seconds (``None`` when the worker did not say).
    """

    limit = ""

    def __init__(self, seconds: float | None) -> None:
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self) -> str:
        given = "" if self.seconds is None else f" ({self.seconds:g}s)"
        return f"{self.limit} time limit{given} exceeded"

    def __reduce__(self) -> tuple[type[TimeLimitError], tuple[float | None]]:
        return type(self), (self.seconds,)


class HardTimeLimitError(TimeLimitError, TimeLimitExceeded):  # type: ignore[misc]
    """The hard ``time_limit`` ended the call: the worker killed the process that ran
    it (and started another). Nothing of the call ran to its end."""

    limit = "hard"


class SoftTimeLimitError(TimeLimitError, SoftTimeLimitExceeded):  # type: ignore[misc]
    """The ``soft_time_limit`` raised inside the call, and the call let it out. The
    worker's traceback (``__cause__``) shows where the function was."""

    limit = "soft"


def time_limit_error(exc: BaseException, timelimit: Sequence[Any] | None = None) -> BaseException:
    """``exc`` as a :class:`TimeLimitError` saying which limit hit, when it is one of
    Celery's time limit exceptions; any other exception as it is.

    :param timelimit: the request's ``(hard, soft)`` limits, for the soft limit's seconds
        (Celery raises it without them); the hard limit's come with its exception.
    """
    if isinstance(exc, TimeLimitError):
        return exc
    if isinstance(exc, SoftTimeLimitExceeded):
        soft = timelimit[1] if timelimit else None
        error: TimeLimitError = SoftTimeLimitError(soft)
    elif isinstance(exc, TimeLimitExceeded):
        hard = exc.args[0] if exc.args else None
        error = HardTimeLimitError(hard if isinstance(hard, (int, float)) else None)
    else:
        return exc
    error.__traceback__ = exc.__traceback__  # where the function was when it hit
    return error
