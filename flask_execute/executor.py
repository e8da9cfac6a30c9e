"""``celery.executor()``: Celery behind the :class:`concurrent.futures.Executor` API.

Code written against the standard executor (``submit``, ``map``, ``shutdown``, ``with``,
``loop.run_in_executor``) runs on Celery workers unchanged. Calls go out as
``celery.options(...)`` sends them, so every keyword of ``submit`` goes to the function.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from celery import states

from flask_execute.batching import active_batch
from flask_execute.calls import map_calls, submit_call
from flask_execute.future_support import remaining
from flask_execute.plans import check_options

if TYPE_CHECKING:
    from flask_execute.futures import Future
    from flask_execute.runtime import AppState

__all__ = ["CeleryExecutor"]

P = ParamSpec("P")
R = TypeVar("R")

#: Futures kept before the done ones are dropped from the executor's list (then twice
#: as many as are left): a long-lived executor holds only what is still running.
_PRUNE_AT = 256


class CeleryExecutor(cf.Executor):
    """A :class:`concurrent.futures.Executor` whose calls run on Celery workers; made by
    :meth:`Celery.executor <flask_execute.Celery.executor>`.

    :param state: the application the calls are sent for.
    :param options: the options of every call (those of :meth:`Celery.options
        <flask_execute.Celery.options>`).

    ``submit`` returns a :class:`~flask_execute.Future`. ``shutdown`` stops new calls
    and waits for those sent; it never stops workers, which the executor does not own.
    """

    def __init__(self, state: AppState, options: Mapping[str, Any]) -> None:
        check_options(options)
        if options.get("key") is not None:
            raise TypeError(
                "option key names one call, and an executor sends many: give each call "
                "its own with celery.options(key=...).submit(...)"
            )
        self._state = state
        self._options = dict(options)
        self._futures: list[Future[Any]] = []
        self._prune_at = _PRUNE_AT
        self._sending = 0  # sends under way: shutdown waits for them to be registered
        self._shut = False
        self._condition = threading.Condition()

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        shut = " shut down" if self._shut else ""
        return f"<celery.executor({given}){shut}>"

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        """Run ``fn(*args, **kwargs)`` on a worker and return its Future; every keyword
        goes to ``fn``.

        :raises RuntimeError: the executor was shut down.
        :raises SerializationError: ``fn`` or an argument cannot be serialized; nothing
            was sent.
        """
        self._enter("submit")
        future: Future[R] | None = None
        try:
            future = submit_call(self._state, fn, args, kwargs, self._options)
            return future
        finally:
            self._leave([future] if future is not None else [])

    def map(
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> Iterator[R]:
        """``fn(a, b, ...)`` for each ``a, b, ...`` of the zipped ``iterables``; the
        results in order, as :meth:`concurrent.futures.Executor.map` returns them.

        Every call is sent before this returns. ``timeout`` counts from this call: the
        iterator raises :exc:`TimeoutError` when a result is not in by then. Leaving the
        iteration early (an exception, a timeout, closing it) cancels the calls not yet
        read. ``chunksize`` is the number of calls per Celery message (default: the
        executor's ``chunksize`` option, else 1 as for the standard executors).

        :raises RuntimeError: the executor was shut down.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        options = dict(self._options)
        if chunksize is None:
            chunksize = options.get("chunksize") or 1
        check_options({"chunksize": chunksize})
        options["chunksize"] = chunksize
        self._enter("map")
        futures: list[Future[R]] = []
        try:
            futures = list(map_calls(self._state, fn, zip(*iterables, strict=False), {}, options))
        finally:
            self._leave(futures)
        return _results(futures, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; with ``wait``, return once every call sent through this
        executor is done and its done callbacks have run.

        ``cancel_futures`` cancels the calls that have not started. Celery tells no one
        when a call starts unless asked to: a call counts as started once its Future
        left the ``PENDING`` state: ``STARTED``, tracked by default, or a progress
        report. With ``CELERY_TASK_TRACK_STARTED = False`` and no report, a running
        call is cancelled too (see :meth:`Future.cancel
        <flask_execute.Future.cancel>`).
        """
        with self._condition:
            self._shut = True
            while self._sending:
                self._condition.wait()
            # Kept: a later shutdown(wait=True) still waits for them.
            self._futures = futures = [f for f in self._futures if not f.done()]
        if cancel_futures:
            for future in futures:
                if future.state == states.PENDING:
                    future.cancel()
        if wait:  # as a thread pool's: done, and the done callbacks have run
            for future in futures:
                with contextlib.suppress(cf.CancelledError):
                    future.exception()

    def _enter(self, what: str) -> None:
        if active_batch(self._state) is not None:
            raise RuntimeError(
                f"cannot {what} inside celery.batch(): the calls would be held until the "
                "block ends, so waiting for them (map's results, shutdown) would never "
                "end; use the executor outside the block"
            )
        with self._condition:
            if self._shut:
                raise RuntimeError(f"cannot {what} after shutdown: make a new executor")
            self._sending += 1

    def _leave(self, futures: list[Future[Any]]) -> None:
        with self._condition:
            self._sending -= 1
            self._futures.extend(futures)
            if len(self._futures) > self._prune_at:
                self._futures = [f for f in self._futures if not f.done()]
                self._prune_at = max(_PRUNE_AT, 2 * len(self._futures))
            self._condition.notify_all()


def _results(futures: list[Future[R]], deadline: float | None) -> Iterator[R]:
    # As the standard executors: results in order, each dropped once read, and those
    # not read cancelled when the iteration ends early.
    futures.reverse()
    try:
        while futures:
            yield futures.pop().result(remaining(deadline))
    finally:
        for future in futures:
            future.cancel()
