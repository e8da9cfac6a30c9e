"""``celery.options(...)``: how calls are sent, with no keyword of the function taken.

``celery.submit(fn, queue="x")`` reads ``queue`` as an option; a function that has a
``queue`` parameter gets it through ``celery.options(queue="x").submit(fn, queue=...)``
instead, where every keyword goes to the function. The options are checked when given
(see :mod:`flask_execute.plans`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from flask_execute.calls import map_calls, submit_call
from flask_execute.plans import OPTIONS, PUBLISH_OPTIONS, check_options, task_options

if TYPE_CHECKING:
    from flask_execute.extension import Celery
    from flask_execute.futures import Future
    from flask_execute.pool import FuturePool
    from flask_execute.registry import RegisteredTask

__all__ = ["OPTIONS", "PUBLISH_OPTIONS", "Options", "check_options"]

P = ParamSpec("P")
R = TypeVar("R")


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

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """``celery.submit`` with these options; every keyword goes to ``fn``
        (``chunksize`` does not apply to a single call)."""

        return submit_call(self._extension.state(), fn, args, kwargs, self._options)

    def map(self, fn: Callable[..., R], /, *calls: Any, **kwargs: Any) -> FuturePool[R]:
        """``celery.map`` with these options; every keyword goes to ``fn``."""
        return self.starmap(fn, calls, **kwargs)

    def starmap(
        self, fn: Callable[..., R], calls: Iterable[Any], /, **kwargs: Any
    ) -> FuturePool[R]:
        """``celery.starmap`` with these options; every keyword goes to ``fn``."""

        return map_calls(self._extension.state(), fn, calls, kwargs, self._options)

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """``@celery.task`` with these options as the task's defaults::

            @celery.options(queue="reports", retries=3, retry_on=(IOError,)).task
            def build(report_id): ...

        They become Celery's task options (``retries`` is ``max_retries``, ``retry_on``
        is ``autoretry_for``, the others keep their names); ``options`` are more task
        options (``name``, ``bind`` ...). ``countdown``, ``eta``, ``key`` and
        ``chunksize`` belong to a send and are refused here.
        """
        found = {**task_options(self._options), **options}
        registry = self._extension.task
        if fn is None:
            return lambda f: registry(f, **found)
        task: RegisteredTask = registry(fn, **found)
        return task
