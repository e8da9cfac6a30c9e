"""``with celery.batch():`` a burst of calls, sent together when the block ends.

Inside the block, ``submit`` (and ``celery.options(...).submit``) packs each call into
a chunk of calls of the same function and options, as ``map`` does, and returns its
Future at once, with its final id; any other message (``map``, ``apply`` with other
options, a registered task's ``delay``) is held as it is. When the block ends, every
chunk and held message goes to the broker in one round trip. If the block raises,
nothing is sent and every Future of the batch is cancelled.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flask_execute.chunk_future import ChunkFuture
from flask_execute.chunks import ChunkBuilder, chunk_sizes, unavailable_with_pool
from flask_execute.errors import BrokerUnavailable

if TYPE_CHECKING:
    from flask_execute.futures import Future
    from flask_execute.runtime import AppState, Message

_ACTIVE: contextvars.ContextVar[tuple[Batch, ...]] = contextvars.ContextVar(
    "flask_execute_batch", default=()
)


def active_batch(state: AppState) -> Batch | None:
    """The batch open for ``state``'s application in this context, if any."""
    for batch in _ACTIVE.get():
        if batch.state is state:
            return batch
    return None


class Batch:
    """The calls of one ``celery.batch()`` block, held until it ends.

    :param state: the application's record.
    :param chunksize: calls per chunk (``None``: 1, 2, 4 ... up to 500, as a map of
        unknown length).
    """

    def __init__(self, state: AppState, chunksize: int | None = None) -> None:
        self.state = state
        self.chunksize = chunksize
        self._builders: dict[tuple[int, str], ChunkBuilder] = {}
        self._held: list[Message] = []
        self.futures: list[Future] = []

    def __len__(self) -> int:
        return len(self.futures)

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
    ) -> Future:
        """Pack one call into the chunk of its function and options; return its Future.

        :raises SerializationError: the call cannot be serialized; the batch goes on.
        """
        key = (id(fn), repr(sorted(options.items())))
        builder = self._builders.get(key)
        if builder is None:
            sizes = chunk_sizes(None, self.chunksize)
            builder = self._builders[key] = ChunkBuilder(self.state, fn, {}, options, sizes)
        future = builder.add(args, kwargs)
        self.futures.append(future)
        return future

    def hold(self, messages: Sequence[Message]) -> list[Future]:
        """Keep whole messages until the batch is sent; return their Futures."""
        futures = []
        for message in messages:
            future = message.future = message.make_future(self.state.app, self.state.pm)
            futures.append(future)
            self._held.append(message)
            # a map's chunk stands for its calls: the batch's Futures are theirs
            calls = future.calls if isinstance(future, ChunkFuture) else [future]
            self.futures += [f for f in calls if f is not None]
        return futures

    def send(self) -> None:
        """Send every chunk and held message in one round trip.

        :raises BrokerUnavailable: the broker did not take them all; the error's
            ``pool`` holds every Future of the batch (those never sent fail with it).
        """
        for builder in self._builders.values():
            builder.close()
        messages = self._held + [m for b in self._builders.values() for m in b.messages]
        if not messages:
            return
        try:
            self.state.send(messages)
        except BrokerUnavailable as exc:
            raise unavailable_with_pool(self.state, messages, self.futures, exc) from exc

    def discard(self) -> None:
        """Send nothing: every Future of the batch is cancelled."""
        for future in self.futures:
            future._set_cancelled()


def open_batch(state: AppState, chunksize: int | None) -> Iterator[Batch]:
    """The body of ``celery.batch()``: a nested block joins the open batch."""
    current = active_batch(state)
    if current is not None:
        yield current
        return
    batch = Batch(state, chunksize)
    token = _ACTIVE.set((*_ACTIVE.get(), batch))
    try:
        with state.holding(batch.hold):
            yield batch
    except BaseException:
        _ACTIVE.reset(token)
        batch.discard()
        raise
    _ACTIVE.reset(token)
    batch.send()
