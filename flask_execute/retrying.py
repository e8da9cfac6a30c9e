"""Retries of submitted calls: ``celery.options(retries=3, retry_on=(IOError,))``.

A :class:`RetryPolicy` says which exceptions a call is tried again for, how many times,
and how long it waits in between: exponential backoff with full jitter, as Celery's
``retry_backoff`` gives registered tasks. Written here rather than with Celery's
``get_exponential_backoff_interval``, which counts in whole seconds only.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Defaults of the retry options (Celery's own for ``retry_backoff_max``/``retry_jitter``).
DEFAULT_BACKOFF = 1.0
DEFAULT_BACKOFF_MAX = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is tried again.

    :ivar retries: how many times at most, after the first try.
    :ivar retry_on: the exception types that are retried; any other fails the call.
    :ivar backoff: seconds before the first retry; doubled for each one after.
    :ivar backoff_max: the most seconds between two tries.
    :ivar jitter: wait a random time up to the backoff (full jitter), so that calls that
        failed together do not all come back together.
    """

    retries: int
    retry_on: tuple[type[BaseException], ...]
    backoff: float = DEFAULT_BACKOFF
    backoff_max: float = DEFAULT_BACKOFF_MAX
    jitter: bool = True

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RetryPolicy | None:
        """The policy of checked options, ``None`` when no call is retried.

        :raises TypeError: ``retries`` without ``retry_on``, or the other way round.
        """
        retries, retry_on = options.get("retries"), options.get("retry_on")
        tuning = [k for k in ("retry_backoff", "retry_backoff_max", "retry_jitter") if k in options]
        if retry_on is None:
            if retries or tuning:
                raise TypeError(
                    "option retry_on is missing: name the exception types worth a retry, "
                    "e.g. celery.options(retries=3, retry_on=(ConnectionError,)); no "
                    "exception is retried by default"
                )
            return None
        if retries is None:
            raise TypeError(
                "option retries is missing: say how many times a call is tried again, "
                "e.g. celery.options(retries=3, retry_on=...)"
            )
        if retries == 0:
            return None
        return cls(
            retries=retries,
            retry_on=retry_on if isinstance(retry_on, tuple) else (retry_on,),
            backoff=float(options.get("retry_backoff", DEFAULT_BACKOFF)),
            backoff_max=float(options.get("retry_backoff_max", DEFAULT_BACKOFF_MAX)),
            jitter=bool(options.get("retry_jitter", True)),
        )

    def retries_for(self, exc: BaseException, tries: int) -> bool:
        """Whether a call that raised ``exc`` after ``tries`` retries is tried again."""
        return tries < self.retries and isinstance(exc, self.retry_on)

    def delay(self, tries: int) -> float:
        """Seconds to wait before retry number ``tries + 1``."""
        delay = min(self.backoff_max, self.backoff * 2**tries)
        return random.uniform(0, delay) if self.jitter else delay


class Retrying:
    """A submitted function and its :class:`RetryPolicy`, as they travel together in the
    signed call token (the policy names exception types, which JSON cannot carry).

    Calling it calls the function; its name, module and docs are the function's own, so
    the call shows under the function's name. The run and chunk tasks take it apart
    with :func:`unwrap` and retry as the policy says.

    :param fn: the submitted function.
    :param policy: how a failed call of it is tried again.
    """

    def __init__(self, fn: Callable[..., Any], policy: RetryPolicy) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.policy = policy

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self.fn!r} retried up to {self.policy.retries} times>"


def with_retries(fn: Callable[..., Any], policy: RetryPolicy | None) -> Callable[..., Any]:
    """``fn`` as it is sent: wrapped with ``policy`` when there is one."""
    return fn if policy is None else Retrying(fn, policy)


def unwrap(fn: Callable[..., Any]) -> tuple[Callable[..., Any], RetryPolicy | None]:
    """The function a worker runs and its retry policy (``None``: no retries)."""
    if isinstance(fn, Retrying):
        return fn.fn, fn.policy
    return fn, None
