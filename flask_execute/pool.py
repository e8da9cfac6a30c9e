"""``FuturePool``: the Futures of one ``celery.map``, queried together."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Generic, overload

from celery import states

from flask_execute import aio
from flask_execute.future_support import T
from flask_execute.futures import Future, accepts_argument, remaining
from flask_execute.progress import PoolProgress


class FuturePool(Generic[T]):
    """The futures of one ``celery.map`` call, queried together; ``FuturePool[int]``
    to a type checker for calls of a function that returns an ``int``.

    Iterates, indexes and measures like a list of :class:`Future`. ``done()`` is true
    when all are done; ``running()`` and ``cancelled()`` when any is; ``result()``
    returns the list of results; ``exception()`` the first exception, if any.
    ``await pool`` is ``result()`` for asyncio code.
    """

    def __init__(self, futures: Iterable[Future[T]] = ()) -> None:
        self.futures: list[Future[T]] = list(futures)
        self._token: str | None = None

    def add(self, future: Future[T]) -> None:
        """Add one more future to the pool."""
        self.futures.append(future)

    def __iter__(self) -> Iterator[Future[T]]:
        return iter(self.futures)

    def __len__(self) -> int:
        return len(self.futures)

    @overload
    def __getitem__(self, index: int) -> Future[T]: ...

    @overload
    def __getitem__(self, index: slice) -> list[Future[T]]: ...

    def __getitem__(self, index: int | slice) -> Future[T] | list[Future[T]]:
        return self.futures[index]

    def __repr__(self) -> str:
        return f"<FuturePool of {len(self.futures)}>"

    @property
    def id(self) -> list[str]:
        """The task ids, in order."""
        return [f.id for f in self.futures]

    @property
    def state(self) -> str:
        """``FAILURE`` if any failed, ``REVOKED`` if any was cancelled, ``SUCCESS`` if all
        succeeded, else ``PENDING``."""
        found = {f.state for f in self.futures}
        for state in (states.FAILURE, states.REVOKED):
            if state in found:
                return str(state)
        return str(states.SUCCESS if found <= {states.SUCCESS} else states.PENDING)

    status = state

    @property
    def token(self) -> str:
        """A signed, expiring token naming the pool, for the status endpoint
        (``celery.blueprint()``). The first use saves the calls' ids in the result
        backend as a Celery group result (one write), so the token stays short.

        :raises RuntimeError: the pool is empty or its Futures were made by hand.
        """
        if self._token is None:
            owner = self.futures[0]._owner if self.futures else None
            if owner is None:
                raise RuntimeError(f"{self!r} belongs to no application: it has no token")
            self._token = owner.pool_token([f.id for f in self.futures])
        return self._token

    @property
    def progress(self) -> PoolProgress:
        """How far the pool got: calls done out of calls in the pool, a ``fraction``
        that counts each running call's reported fraction, and the sum of the calls'
        own reports (:class:`~flask_execute.progress.PoolProgress`)."""
        return PoolProgress.of((f.done(), f.progress) for f in self.futures)

    def running(self) -> bool:
        return any(f.running() for f in self.futures)

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def cancelled(self) -> bool:
        return any(f.cancelled() for f in self.futures)

    def cancel(self) -> bool:
        """Cancel every future; ``True`` if all are cancelled now."""
        return all([f.cancel() for f in self.futures])

    def result(self, timeout: float | None = None) -> list[T]:
        """Wait for every result (``timeout`` bounds the whole wait) and return them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return [f.result(remaining(deadline)) for f in self.futures]

    def results(self, timeout: float | None = None) -> Iterator[T]:
        """Yield the results in submission order, each as soon as it is in (so the first
        comes before the pool is done); a call that failed raises its exception when
        reached. ``timeout`` bounds the whole iteration."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for future in self.futures:
            yield future.result(remaining(deadline))

    def __await__(self) -> Generator[Any, None, list[T]]:
        """``await pool``: the list of results in order, as :meth:`result`, raising the
        exception of the first call that failed, in submission order. No thread waits
        (see :meth:`Future.__await__ <flask_execute.Future.__await__>`)."""
        return aio.outcomes(self.futures).__await__()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for every task (``timeout`` bounds the whole wait) and return the
        exception of the first one that failed, in submission order, or ``None``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        first: BaseException | None = None
        for future in self.futures:
            exc = future.exception(remaining(deadline))
            if first is None:
                first = exc
        return first

    def add_done_callback(self, fn: Callable[..., Any]) -> None:
        """Call ``fn(pool)`` (or ``fn()``) once, when every future is done."""
        takes_pool = accepts_argument(fn)
        remaining = [len(self.futures)]
        lock = threading.Lock()

        def one_done(_future: Future[T]) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                fn(self) if takes_pool else fn()

        if not self.futures:
            fn(self) if takes_pool else fn()
        for future in self.futures:
            future.add_done_callback(one_done)
