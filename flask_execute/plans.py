"""The options of a call: their names, their checks, and how they split.

Every option is checked when given (:func:`check_options`), and the whole set once more
when a call is sent (:func:`plan`), so that a bad value fails at the call site with
nothing published.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask_execute.retrying import RetryPolicy

#: Celery publishing options, as ``submit`` reads them from its keywords.
PUBLISH_OPTIONS = ("queue", "countdown", "eta", "expires", "priority")
#: Celery's per-message time limits (seconds); they travel as publishing options.
LIMIT_OPTIONS = ("time_limit", "soft_time_limit")
#: How a failed call is tried again (see :class:`~flask_execute.retrying.RetryPolicy`).
RETRY_OPTIONS = ("retries", "retry_backoff", "retry_backoff_max", "retry_jitter", "retry_on")
#: Deduplication: one task per key while it is queued or running.
KEY_OPTIONS = ("key", "key_keep")
#: Every option :meth:`Celery.options <flask_execute.Celery.options>` takes.
OPTIONS = (*PUBLISH_OPTIONS, *LIMIT_OPTIONS, *RETRY_OPTIONS, *KEY_OPTIONS, "chunksize")


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exception_types(value: Any) -> bool:
    items = value if isinstance(value, tuple) else (value,)
    return bool(items) and all(isinstance(t, type) and issubclass(t, BaseException) for t in items)


#: name -> (accepts the value, what is accepted); ``None`` is always accepted: unset.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "queue": (lambda v: isinstance(v, str) and bool(v), "a queue name (a non-empty string)"),
    "countdown": (lambda v: _number(v) and v >= 0, "a number of seconds, 0 or more"),
    "eta": (lambda v: isinstance(v, (datetime, str)), "a datetime (or an ISO 8601 string)"),
    "expires": (
        lambda v: isinstance(v, (datetime, str)) or (_number(v) and v > 0),
        "a number of seconds above 0, or a datetime",
    ),
    "priority": (lambda v: _whole(v) and 0 <= v <= 255, "a whole number from 0 to 255"),
    "time_limit": (lambda v: _number(v) and v > 0, "a number of seconds above 0"),
    "soft_time_limit": (lambda v: _number(v) and v > 0, "a number of seconds above 0"),
    "retries": (lambda v: _whole(v) and v >= 0, "a whole number of retries, 0 or more"),
    "retry_backoff": (lambda v: _number(v) and v > 0, "a number of seconds above 0"),
    "retry_backoff_max": (lambda v: _number(v) and v > 0, "a number of seconds above 0"),
    "retry_jitter": (lambda v: isinstance(v, bool), "True or False"),
    "retry_on": (_exception_types, "an exception class, or a tuple of them"),
    "key": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "key_keep": (lambda v: _number(v) and v >= 0, "a number of seconds, 0 or more"),
    "chunksize": (
        lambda v: _whole(v) and v >= 1,
        "a whole number of calls, 1 or more (or None for an automatic size)",
    ),
}


#: Options whose bad value is the wrong kind of thing (TypeError), not a bad number.
_TYPED = ("queue", "retry_jitter", "retry_on", "key")


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse an unknown option or a bad value, naming what is accepted.

    :raises TypeError: an unknown option, or a value of the wrong type.
    :raises ValueError: a value out of range.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"celery.options() takes {', '.join(OPTIONS)}"
        )
    for name, value in options.items():
        accepts, what = _CHECKS[name]
        if value is None or accepts(value):
            continue
        error = TypeError if name in _TYPED else ValueError
        raise error(f"option {name} must be {what}, not {value!r}")


@dataclass(frozen=True)
class Plan:
    """How the calls of one ``submit``/``map`` are sent, from checked options.

    :ivar publish: options for Celery's ``apply_async`` (the time limits among them).
    :ivar retry: how a failed call is tried again, or ``None``.
    :ivar key: the deduplication key, or ``None``.
    :ivar key_keep: seconds the key keeps naming a finished task.
    :ivar chunksize: calls per message of a map (``None``: automatic).
    """

    publish: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy | None = None
    key: str | None = None
    key_keep: float = 0
    chunksize: int | None = None

    @property
    def plain(self) -> bool:
        """Only publishing options: nothing for this package to do beyond sending."""
        return self.retry is None and self.key is None


def plan(options: Mapping[str, Any], *, extra: bool = False) -> Plan:
    """Check ``options`` and split them by who acts on them.

    :param extra: accept any other Celery publishing option (``Celery.apply``); they
        go to Celery unchecked.
    :raises TypeError, ValueError: an unknown option (unless ``extra``), a bad value,
        or options that do not go together; nothing was sent.
    """
    if not options:  # most calls: nothing to check
        return Plan()
    given = {k: v for k, v in options.items() if v is not None}
    ours = {k: v for k, v in given.items() if k in OPTIONS}
    check_options(ours if extra else given)
    publish = {k: v for k, v in given.items() if k not in OPTIONS or k in PUBLISH_OPTIONS}
    publish.update((k, ours[k]) for k in LIMIT_OPTIONS if k in ours)
    soft, hard = ours.get("soft_time_limit"), ours.get("time_limit")
    if soft is not None and hard is not None and soft >= hard:
        raise ValueError(
            f"option soft_time_limit ({soft}) must be below time_limit ({hard}): the soft "
            "limit raises inside the call, the hard one ends it"
        )
    if "key_keep" in ours and "key" not in ours:
        raise TypeError("option key_keep needs a key: celery.options(key=..., key_keep=...)")
    return Plan(
        publish=publish,
        retry=RetryPolicy.from_options(ours),
        key=ours.get("key"),
        key_keep=float(ours.get("key_keep", 0)),
        chunksize=ours.get("chunksize"),
    )


#: Our option -> the Celery task option a registered task takes for it.
_TASK_OPTIONS = {
    "queue": "queue",
    "priority": "priority",
    "expires": "expires",
    "time_limit": "time_limit",
    "soft_time_limit": "soft_time_limit",
    "retries": "max_retries",
    "retry_on": "autoretry_for",
    "retry_backoff": "retry_backoff",
    "retry_backoff_max": "retry_backoff_max",
    "retry_jitter": "retry_jitter",
}


def task_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Celery task options (``@celery.task(...)``) for checked call options.

    :raises TypeError: an option that belongs to a send, not to a task.
    """
    plan(options)  # the same checks and pairings as for a send
    given = {k: v for k, v in options.items() if v is not None}
    sending = sorted(set(given) - set(_TASK_OPTIONS))
    if sending:
        raise TypeError(
            f"option{'s' if len(sending) > 1 else ''} {', '.join(sending)} cannot be a "
            "registered task's default: give it when sending "
            "(celery.options(...).submit, or task.apply_async(...))"
        )
    found = {_TASK_OPTIONS[k]: v for k, v in given.items()}
    if isinstance(found.get("autoretry_for"), type):
        found["autoretry_for"] = (found["autoretry_for"],)
    return found
