"""Streamed results, on the submitting side: the Future of a generator function.

``celery.submit(gen)`` of a generator function returns a :class:`StreamFuture`:
``future.stream()`` yields each item as the worker yields it (``for`` and ``async
for``), then ends; ``future.result()`` is the generator's return value. Items are read
from the result backend batch by batch (see :mod:`flask_execute.streams`) as the
reader asks for them, so a slow reader holds one batch, never the whole stream, and
several readers (two ``stream()`` loops, the status endpoint) each read every item.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic

from flask_execute.aio import waker
from flask_execute.errors import ConfigurationError
from flask_execute.future_support import FutureOwner, FutureTimeout, ItemT, T
from flask_execute.futures import Future
from flask_execute.streams import STREAM, StreamEnd


def streams(fn: Any) -> bool:
    """Whether submitting ``fn`` streams its results: a generator function.

    :raises TypeError: ``fn`` is an async generator function (not supported).
    """
    if inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"{fn!r} is an async generator function: submit a plain generator function "
            "to stream results (the worker runs no event loop)"
        )
    return inspect.isgeneratorfunction(fn)


def check_stream_backend(backend: Any, eager: bool) -> None:
    """Raise unless ``backend`` can hold a stream's items (a key-value store)."""
    from celery.backends.base import BaseKeyValueStoreBackend

    if not eager and not isinstance(backend, BaseKeyValueStoreBackend):
        raise ConfigurationError(
            f"streamed results need a key-value result backend (Redis, the filesystem), "
            f"not {type(backend).__name__}: set CELERY_RESULT_BACKEND, or return a list "
            "instead of yielding"
        )


#: Seconds a waiting reader goes before it reads the stored state itself, in case a
#: notification was missed.
RECHECK = 1.0


class StreamFuture(Future[T], Generic[ItemT, T]):
    """The Future of a submitted generator function; ``StreamFuture[int, str]`` to a
    type checker for a generator that yields ``int`` and returns ``str``.

    :param task_id: the Celery task id.
    :param owner: the application's tracker.
    :param name: the function's display name.
    :param read_batch: returns the items of batch ``index`` from the result backend,
        ``None`` if there is no such batch.
    """

    def __init__(
        self,
        task_id: str,
        owner: FutureOwner | None,
        name: str | None,
        read_batch: Callable[[int], list[Any] | None],
    ) -> None:
        super().__init__(task_id, owner, name)
        self._read_batch = read_batch
        self._batches = 0  # batches known to be written
        self._inline: list[Any] | None = None  # eager mode: every item, here

    # -- from the result source --------------------------------------------------------

    def set_state(self, state: str, info: Any = None) -> None:
        if state == STREAM and isinstance(info, dict):
            self._batches = max(self._batches, int(info.get("batches", 0)))
        super().set_state(state, info)

    def set_result(self, result: Any) -> None:
        if isinstance(result, StreamEnd):
            self._batches = max(self._batches, result.batches)
            if result.inline:
                self._inline = result.inline
            result = result.value
        super().set_result(result)

    # -- reading -----------------------------------------------------------------------

    @property
    def batches(self) -> int:
        """How many batches of items the worker has written so far."""
        return self._batches

    def items_from(self, batch: int) -> tuple[list[Any], int]:
        """The items of the batches written from ``batch`` on, read now without
        waiting, and the batch to read from next time."""
        if self._inline is not None:
            return (self._inline, 1) if batch == 0 else ([], batch)
        items: list[Any] = []
        # A stream that failed may have written batches whose notice was missed: its
        # outcome does not count them, so read on until there is no next batch.
        failed = self.done() and not self.cancelled() and self.exception(0) is not None
        while batch < self._batches or failed:
            found = self._read_batch(batch)
            if found is None:
                break
            items.extend(found)
            batch += 1
        self._batches = max(self._batches, batch)
        return items, batch

    def stream(self, timeout: float | None = None) -> ItemStream[ItemT]:
        """Every item the generator yields, in order, as it is yielded; then the end
        (or the generator's exception, after the items before it).

        Use it with ``for`` or ``async for``. ``timeout`` bounds the whole iteration
        (:exc:`TimeoutError` when it runs out). Each call reads the stream from its
        first item.
        """
        return ItemStream(self, timeout)


class ItemStream(Generic[ItemT]):
    """The items of one :class:`StreamFuture`, for ``for`` and ``async for``."""

    def __init__(self, future: StreamFuture[ItemT, Any], timeout: float | None) -> None:
        self.future = future
        self.timeout = timeout

    def __iter__(self) -> Iterator[ItemT]:
        future = self.future
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        changed = threading.Event()
        unsubscribe = future.subscribe(changed.set)
        batch = 0
        try:
            while True:
                changed.clear()
                done = future.done()
                items, batch = future.items_from(batch)
                yield from items
                if done and batch >= future.batches:
                    break
                if not changed.wait(self._wait(deadline)):
                    self._recheck(deadline)
        finally:
            unsubscribe()
        self._end()

    async def __aiter__(self) -> AsyncIterator[ItemT]:
        future = self.future
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        changed = asyncio.Event()

        unsubscribe = future.subscribe(waker(loop, _set, changed))
        batch = 0
        try:
            while True:
                changed.clear()
                done = future.done()
                # Reading a batch is a backend round trip: off the event loop.
                items, batch = await loop.run_in_executor(None, future.items_from, batch)
                for item in items:
                    yield item
                if done and batch >= future.batches:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), self._wait(deadline))
                except asyncio.TimeoutError:  # not the builtin one before Python 3.11
                    await loop.run_in_executor(None, self._recheck, deadline)
        finally:
            unsubscribe()
        self._end()

    def _wait(self, deadline: float | None) -> float:
        if deadline is None:
            return RECHECK
        return max(0.0, min(RECHECK, deadline - time.monotonic()))

    def _recheck(self, deadline: float | None) -> None:
        # Nothing came for a while: read the stored state (a missed notification), and
        # give up once the deadline passed.
        future = self.future
        if future._owner is not None and not future.done():
            future._owner.refresh(future.id)
        if deadline is not None and time.monotonic() >= deadline and not future.done():
            raise FutureTimeout(
                f"the stream of task {future.id} did not end within {self.timeout} seconds"
            )

    def _end(self) -> None:
        error = self.future.exception(0)
        if error is not None:
            raise error


def _set(event: asyncio.Event) -> None:
    event.set()
