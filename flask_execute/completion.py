"""``as_completed``: futures in the order they finish, for ``for`` and ``async for``."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import queue
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import cast

from flask_execute.aio import waker
from flask_execute.futures import Future, FutureTimeout, in_callbacks, remaining
from flask_execute.pool import FuturePool

#: What :func:`as_completed` takes: a Future, a pool, or an iterable of either.
Futures = Future | FuturePool | Iterable[Future | FuturePool]


def as_completed(futures: Futures, timeout: float | None = None) -> AsCompleted:
    """Yield each future as it finishes, with ``for`` or ``async for``.

    ::

        for future in as_completed(futures, timeout=10):
            print(future.result())

        async for future in as_completed(celery.map(add, [1, 2], [3, 4])):
            print(await future)

    :param futures: :class:`Future` objects and :class:`FuturePool` objects (each
        stands for its futures), or one of either. A future given twice is yielded once.
    :param timeout: seconds, counted from this call, after which iterating raises
        :exc:`TimeoutError` (also a :exc:`concurrent.futures.TimeoutError`) if futures
        are still pending, naming how many. ``None`` waits as long as it takes.
    :raises TypeError: something else than a Future or a FuturePool was given.

    A future is yielded once it is done and its done callbacks have finished, so its
    ``result()`` returns at once. No thread waits for it, in either form.
    """
    return AsCompleted(futures, timeout)


class AsCompleted:
    """What :func:`as_completed` returns: iterate it with ``for`` or ``async for``.

    Each iteration watches every future anew; the deadline stays the one set when
    :func:`as_completed` was called.
    """

    def __init__(self, futures: Futures, timeout: float | None = None) -> None:
        self.futures: list[Future] = _flatten(futures)
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def __repr__(self) -> str:
        return f"<as_completed of {len(self.futures)}>"

    def __iter__(self) -> Iterator[Future]:
        if in_callbacks():
            # The futures' own done callbacks queue behind this thread: yield each once
            # done, as result() here does not wait for callbacks either.
            try:
                done = cf.as_completed(self.futures, remaining(self._deadline))
                yield from cast("Iterator[Future]", done)
            except cf.TimeoutError:
                raise self._timed_out(sum(not f.done() for f in self.futures)) from None
            return
        finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
        watch = _Watch(self.futures, finished.put, finished.put)
        try:
            for left in range(len(self.futures), 0, -1):
                try:
                    yield finished.get(timeout=remaining(self._deadline))
                except queue.Empty:
                    raise self._timed_out(left) from None
        finally:
            watch.close()  # after a break too: the futures keep no hook of a dead loop

    def __aiter__(self) -> AsyncIterator[Future]:
        return self._async_iter()

    async def _async_iter(self) -> AsyncIterator[Future]:
        loop = asyncio.get_running_loop()
        finished: asyncio.Queue[Future] = asyncio.Queue()
        watch = _Watch(
            self.futures,
            lambda future: waker(loop, finished.put_nowait, future)(),
            finished.put_nowait,
        )
        try:
            for left in range(len(self.futures), 0, -1):
                try:
                    # One already in counts even past the deadline (wait_for(..., 0)
                    # times out before it would look).
                    yield finished.get_nowait()
                    continue
                except asyncio.QueueEmpty:
                    pass
                try:
                    yield await asyncio.wait_for(finished.get(), remaining(self._deadline))
                except asyncio.TimeoutError:
                    raise self._timed_out(left) from None
        finally:
            watch.close()

    def _timed_out(self, left: int) -> FutureTimeout:
        return FutureTimeout(
            f"{left} (of {len(self.futures)}) futures unfinished after {self.timeout} seconds"
        )


class _Watch:
    """A settle hook on each future that reports it, once: through ``report`` from the
    thread that settles it, or through ``ready`` at once if it has settled already."""

    def __init__(
        self,
        futures: list[Future],
        report: Callable[[Future], None],
        ready: Callable[[Future], None],
    ) -> None:
        self.hooks: list[tuple[Future, Callable[[], None]]] = []
        for future in futures:

            def hook(future: Future = future) -> None:
                report(future)

            if future._on_settled(hook):
                self.hooks.append((future, hook))
            else:
                ready(future)

    def close(self) -> None:
        for future, hook in self.hooks:
            future._off_settled(hook)


def _flatten(futures: Futures) -> list[Future]:
    items: Iterable[Future | FuturePool] = (
        [futures] if isinstance(futures, (Future, FuturePool)) else futures
    )
    seen: set[Future] = set()
    flat: list[Future] = []
    for item in items:
        for future in item if isinstance(item, FuturePool) else (item,):
            if not isinstance(future, Future):
                raise TypeError(
                    f"as_completed() takes flask_execute Futures and FuturePools, not "
                    f"{type(future).__name__}: use concurrent.futures.as_completed for "
                    "other futures"
                )
            if future not in seen:
                seen.add(future)
                flat.append(future)
    return flat
