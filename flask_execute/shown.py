"""What Flower, ``celery inspect`` and Celery's logs show of a call, instead of tokens.

A call travels as a signed token (:mod:`flask_execute.wire`), which says nothing to a
person. Celery shows a message's ``argsrepr``/``kwargsrepr`` where it would show the
arguments (Flower, events, ``celery inspect``, the worker's log), and the ``repr`` of
what a task returned as its result: so a call is published with ``add(1, 2)`` as its
``argsrepr``, a chunk of a map with a preview of its first calls, and the run task
returns its result envelope in a :class:`ShownResult`, which Celery stores as the
envelope but shows as the value. ``CELERY_SHOW_VALUES = False`` keeps values out of all
of it, for sensitive data (``add(…)``). The reprs are :mod:`reprlib`'s, so a large
argument costs a few hundred characters, once per message.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

from celery.worker.request import Request

from flask_execute.wire import user_frames

#: Shown in place of a value when ``CELERY_SHOW_VALUES`` is off.
HIDDEN = "…"

#: How many calls of a chunk its ``argsrepr`` shows before ``…``.
PREVIEW_CALLS = 2

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 6


def value_repr(value: Any) -> str:
    """A short ``repr`` of ``value``; one that raises shows its type."""
    try:
        return _REPR.repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def short_name(fn: Any) -> str:
    """The name a call is shown under: ``add``, ``Report.build``, ``<lambda>``."""
    fn = getattr(fn, "fn", fn) if type(fn).__name__ == "Retrying" else fn  # its retry wrapper
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def call_repr(name: str, args: Sequence[Any], kwargs: Mapping[str, Any], show: bool) -> str:
    """``add(1, 2, z=3)``, or ``add(…)`` when values are hidden."""
    if not show:
        return f"{name}({HIDDEN})" if args or kwargs else f"{name}()"
    shown = [value_repr(arg) for arg in args]
    shown += [f"{key}={value_repr(value)}" for key, value in kwargs.items()]
    return f"{name}({', '.join(shown)})"


def kwargs_repr(kwargs: Mapping[str, Any], show: bool) -> str:
    """The call's own keywords (never the run task's), as Celery's ``kwargsrepr``."""
    if not kwargs:
        return "{}"
    return value_repr(dict(kwargs)) if show else "{" + HIDDEN + "}"


def shown_options(
    fn: Any, args: Sequence[Any], kwargs: Mapping[str, Any], show: bool
) -> dict[str, str]:
    """The ``argsrepr``/``kwargsrepr`` publishing options of one call of ``fn``."""
    return {
        "argsrepr": call_repr(short_name(fn), args, kwargs, show),
        "kwargsrepr": kwargs_repr(kwargs, show),
    }


def chunk_argsrepr(previews: Sequence[str], count: int) -> str:
    """``<3 calls> add(1, 2), add(3, 4), …``: a chunk's size and its first calls."""
    more = ", …" if count > len(previews) else ""
    return f"<{count} calls> {', '.join(previews)}{more}"


def user_cause(exc: BaseException) -> BaseException:
    """``exc`` with its traceback cut to the user's own frames, to chain the error a
    task raises on the wire to: Celery's traceback (Flower, the log) then shows them."""
    return exc.with_traceback(user_frames(exc.__traceback__))


class ShownResult:
    """What the run task returns: stored as ``envelope`` (kombu's JSON encoder calls
    ``__json__``), shown by Celery (Flower, events, logs) as the value's ``repr``."""

    __slots__ = ("envelope", "show", "value")

    def __init__(self, envelope: dict[str, str], value: Any, show: bool) -> None:
        self.envelope, self.value, self.show = envelope, value, show

    def __json__(self) -> dict[str, str]:
        return self.envelope

    def __repr__(self) -> str:  # Celery's saferepr calls it once, for the event and log
        return value_repr(self.value) if self.show else HIDDEN


class ShownRequest(Request):  # type: ignore[misc]
    """The worker's request for our tasks: ``celery inspect active``/``reserved``/
    ``scheduled`` (and Flower's worker pages) show the ``argsrepr``, never the token."""

    def info(self, safe: bool = False) -> dict[str, Any]:
        info: dict[str, Any] = super().info(safe=True)
        return info


#: The ``Request`` option of our tasks (a dotted name, resolved by the worker).
SHOWN_REQUEST = f"{__name__}:ShownRequest"
