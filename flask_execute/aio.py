"""``await`` for Futures and FuturePools: the bridge to the event loop.

A Future settles on the result listener's thread (or the callback thread); the loop
waiting for it is woken with :meth:`asyncio.AbstractEventLoop.call_soon_threadsafe`,
so no thread waits for any awaited future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from flask_execute.futures import Future

T = TypeVar("T")


def waker(loop: asyncio.AbstractEventLoop, fn: Callable[[T], None], arg: T) -> Callable[[], None]:
    """A hook that runs ``fn(arg)`` in ``loop``, callable from any thread.

    A loop closed meanwhile (its coroutine gone with it) is not an error: the thread
    that settles the future must never fail for it.
    """

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # closed loop: no one is left to wake
            loop.call_soon_threadsafe(fn, arg)

    return wake


def _release(woken: asyncio.Future[None]) -> None:
    if not woken.done():  # the awaiting coroutine may have been cancelled meanwhile
        woken.set_result(None)


async def outcome(future: Future) -> Any:
    """Wait for ``future`` to settle in the running loop; return or raise its outcome.

    Cancelling this coroutine cancels only the wait, never the task: ``woken`` is the
    loop's own future, so ``asyncio.wait_for`` or a task group may give up on it.
    """
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()
    wake = waker(loop, _release, woken)
    if future._on_settled(wake):
        try:
            await woken
        finally:
            future._off_settled(wake)
    # Settled: the base class answers at once, without Future.result's waits (which
    # would block the loop).
    return cf.Future.result(future, 0)


async def outcomes(futures: Iterable[Future]) -> list[Any]:
    """The outcomes of ``futures`` in order; the first failure, in order, is raised."""
    return [await outcome(future) for future in futures]
