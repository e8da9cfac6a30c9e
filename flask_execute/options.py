"""``celery.options(...)``: how calls are sent, with no keyword of the function taken.

``celery.submit(fn, queue="x")`` reads ``queue`` as an option; a function that has a
``queue`` parameter gets it through ``celery.options(queue="x").submit(fn, queue=...)``
instead, where every keyword goes to the function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask_execute.chunks import send_map

if TYPE_CHECKING:
    from flask_execute.extension import Celery
    from flask_execute.futures import Future
    from flask_execute.pool import FuturePool

#: Celery publishing options, as ``submit`` reads them from its keywords.
PUBLISH_OPTIONS = ("queue", "countdown", "eta", "expires", "priority")
#: Every option :meth:`Celery.options <flask_execute.Celery.options>` takes.
OPTIONS = (*PUBLISH_OPTIONS, "chunksize")


def check_options(options: dict[str, Any]) -> None:
    """Refuse an unknown option or a bad ``chunksize``, naming what is accepted."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
            f"celery.options() takes {', '.join(OPTIONS)}"
        )
    size = options.get("chunksize")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(
            f"chunksize must be a whole number of calls, 1 or more (or None for an "
            f"automatic size), not {size!r}"
        )


class Options:
    """Sends calls with fixed options; made by :meth:`Celery.options
    <flask_execute.Celery.options>`.

    :param extension: the extension that sends.
    :param options: the options (checked).
    """

    def __init__(self, extension: Celery, options: dict[str, Any]) -> None:
        check_options(options)
        self._extension = extension
        self._options = options

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"<celery.options({given})>"

    def options(self, **options: Any) -> Options:
        """These options, updated with ``options``."""
        return Options(self._extension, {**self._options, **options})

    def _publish(self) -> dict[str, Any]:
        return {k: v for k, v in self._options.items() if k in PUBLISH_OPTIONS}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """``celery.submit`` with these options; every keyword goes to ``fn``
        (``chunksize`` does not apply to a single call)."""
        return self._extension.apply(fn, args, kwargs, **self._publish())

    def map(self, fn: Callable[..., Any], /, *calls: Any, **kwargs: Any) -> FuturePool:
        """``celery.map`` with these options; every keyword goes to ``fn``."""
        return self.starmap(fn, calls, **kwargs)

    def starmap(self, fn: Callable[..., Any], calls: Iterable[Any], /, **kwargs: Any) -> FuturePool:
        """``celery.starmap`` with these options; every keyword goes to ``fn``."""
        chunksize = self._options.get("chunksize")
        state = self._extension.state()
        return send_map(state, fn, calls, kwargs, self._publish(), chunksize)
