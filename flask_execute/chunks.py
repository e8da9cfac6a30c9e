"""Batched ``map``: many calls of one function per Celery message, one Future per call.

``celery.map`` packs its calls into chunks. A chunk is one message for the chunk task
(``flask_execute.run_chunk``), run by one worker, and reports its calls' outcomes as one
backend write (and, for a long chunk, a few partial writes on the way). Each call has
its own :class:`~flask_execute.Future`, with the id ``<chunk id>.<index>``; the chunk
itself is an internal :class:`~flask_execute.chunk_future.ChunkFuture` that fans the
outcomes out. Progress a call reports goes to its own id, and the application's tracker
routes it to the call's Future.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from celery.utils import uuid

from flask_execute.cancelling import CancelMarks
from flask_execute.chunk_future import ChunkFuture
from flask_execute.chunk_ids import call_id
from flask_execute.errors import BrokerUnavailable
from flask_execute.refs import Ref, take_futures, waits_for
from flask_execute.runtime import Message, display_name
from flask_execute.shown import PREVIEW_CALLS, call_repr, chunk_argsrepr, kwargs_repr, short_name
from flask_execute.stream_future import streams
from flask_execute.tasks import due_time

if TYPE_CHECKING:
    from flask_execute.futures import Future
    from flask_execute.pool import FuturePool
    from flask_execute.runtime import AppState

#: With an automatic chunk size, a map of known length is cut in about this many
#: chunks (enough to keep some 16 worker processes busy to the end)...
TARGET_CHUNKS = 64
#: ...of at most this many calls. A map of unknown length (a generator) starts with
#: chunks of one call and doubles their size up to this.
MAX_CHUNKSIZE = 500


def chunk_sizes(total: int | None, chunksize: int | None) -> Iterator[int]:
    """The sizes of successive chunks of a map of ``total`` calls (``None``: unknown)."""
    if chunksize is not None:
        return itertools.repeat(chunksize)
    if total is not None:
        return itertools.repeat(min(MAX_CHUNKSIZE, max(1, math.ceil(total / TARGET_CHUNKS))))
    return itertools.chain((2**k for k in range(9)), itertools.repeat(MAX_CHUNKSIZE))


class ChunkBuilder:
    """Packs calls of one function, with the same options, into chunk messages.

    :param state: the application's record.
    :param fn: the function every call runs.
    :param kwargs: keywords every call gets.
    :param options: Celery publishing options of every chunk.
    :param sizes: the number of calls of each chunk in turn (see :func:`chunk_sizes`).

    Each call is serialized when added and gets its Future at once, with its final id;
    a chunk closes when it holds its number of calls, or before one more would take it
    over ``CELERY_MAX_PAYLOAD``. Closed chunks wait in :attr:`messages` to be sent.
    """

    def __init__(
        self,
        state: AppState,
        fn: Callable[..., Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        sizes: Iterator[int],
    ) -> None:
        self.state = state
        self.fn = fn
        self.name = display_name(fn)
        limit = state.app.config["CELERY_MAX_PAYLOAD"]
        self.show = state.app.config["CELERY_SHOW_VALUES"]
        self.short_name = short_name(fn)
        self.kwargsrepr = kwargs_repr(kwargs, self.show)  # the keywords every call gets
        _, kwargs, self.shared_refs = take_futures(state, (), kwargs)
        self.shared = state.wire.dump_function(fn, kwargs, limit)
        self.room = None if limit is None else max(1, limit - len(self.shared))
        self.options = dict(options)
        self.due = due_time(self.options.get("countdown"), self.options.get("eta"))
        self.marks = CancelMarks(state.celery_app.backend)
        self.sizes = sizes
        self.messages: list[Message] = []
        self.added = 0
        self._open()

    def _open(self) -> None:
        self.chunk_id = uuid()
        self.size = next(self.sizes)
        self.data: list[bytes] = []
        self.calls: list[Future] = []
        self.refs: list[Ref] = list(self.shared_refs)
        self.previews: list[str] = []  # the first calls, for the chunk's argsrepr
        self.used = 0

    def add(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Future:
        """Add one call (``kwargs``: its own keywords, over the shared ones); return
        its Future.

        :raises SerializationError: the call cannot be serialized or is too large.
        """
        state = self.state
        args, kwargs, refs = take_futures(state, args, kwargs)
        data = state.wire.dump_call(self.fn, args, kwargs, index=self.added, limit=self.room)
        full = len(self.data) >= self.size
        if self.data and (full or (self.room is not None and self.used + len(data) > self.room)):
            self.close()
        self.refs += refs
        index = len(self.data)
        if index < PREVIEW_CALLS:
            self.previews.append(call_repr(self.short_name, args, kwargs, self.show))
        future = state.pm.make_future(state.app, call_id(self.chunk_id, index), self.name)
        self.data.append(data)
        self.calls.append(future)
        self.used += len(data)
        self.added += 1
        return future

    def close(self) -> None:
        """Close the open chunk (if it holds a call) into a message."""
        if not self.data:
            return
        state, chunk_id, count = self.state, self.chunk_id, len(self.data)
        future = ChunkFuture(chunk_id, state.futures, self.name, self.calls, state.wire, self.marks)
        token = state.wire.sign_calls(self.shared, self.data, task_id=chunk_id, due=self.due)
        shown = {"argsrepr": chunk_argsrepr(self.previews, count), "kwargsrepr": self.kwargsrepr}
        options = {"shadow": self.name, **shown, **self.options}
        after = waits_for(self.refs)
        kwargs: dict[str, Any] = {"after": list(after)} if self.refs else {}
        message = Message(state.chunk_task, (token,), kwargs, options, self.name, chunk_id)
        message.future, message.after = future, after
        self.messages.append(message)
        self._open()


def pack_map(
    state: AppState,
    fn: Callable[..., Any],
    calls: Iterable[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    chunksize: int | None,
) -> tuple[list[Message], list[Future]]:
    """Serialize every call of a map into chunk messages, before anything is sent.

    :param calls: one item per call: a list or tuple of positional arguments, or a
        single argument.
    :return: the chunks' messages and the calls' Futures, in order.
    :raises SerializationError: a call cannot be serialized or is over
        ``CELERY_MAX_PAYLOAD``; nothing was sent.
    """
    total = len(calls) if hasattr(calls, "__len__") else None  # type: ignore[arg-type]
    builder = ChunkBuilder(state, fn, kwargs, options, chunk_sizes(total, chunksize))
    futures = [
        builder.add(tuple(item) if isinstance(item, (list, tuple)) else (item,), {})
        for item in calls
    ]
    builder.close()
    return builder.messages, futures


def send_map(
    state: AppState,
    fn: Callable[..., Any],
    calls: Iterable[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    chunksize: int | None,
) -> FuturePool:
    """Send the calls of a map in chunks; return the pool of their Futures (behind
    ``celery.map``, ``celery.starmap`` and ``celery.options``).

    :raises BrokerUnavailable: the broker did not take every chunk; the error's
        ``pool`` holds every call's Future (those never sent fail with it).
    """
    if not callable(fn):
        raise TypeError(f"map() needs a callable as its first argument, not {fn!r}")
    if streams(fn):
        raise TypeError(
            f"map() cannot stream the results of {fn!r}, a generator function: submit "
            "each call with celery.submit() to stream it, or return a list"
        )
    messages, futures = pack_map(state, fn, calls, kwargs, options, chunksize)
    if messages:
        try:
            state.send(messages)
        except BrokerUnavailable as exc:
            raise unavailable_with_pool(state, messages, futures, exc) from exc
    return state.pool(futures)


def unavailable_with_pool(
    state: AppState, messages: list[Message], futures: list[Future], exc: BrokerUnavailable
) -> BrokerUnavailable:
    """The error of a send the broker did not take whole (a map, a batch): messages
    never sent fail their Futures with it; those that may have arrived keep waiting.
    The error's ``pool`` holds every Future."""
    maybe = set(exc.maybe_sent)
    waiting: list[str] = []
    for message in messages:
        if message.task_id in maybe:
            calls = message.future.calls if isinstance(message.future, ChunkFuture) else ()
            waiting += [f.id for f in calls if f is not None] or [message.task_id]
    error = BrokerUnavailable(
        f"{exc}. Of these {len(futures)} calls, {len(waiting)} may still run; the "
        "error's pool holds every call's Future (the calls never sent fail with this "
        "error)",
        task_ids=[f.id for f in futures],
        maybe_sent=waiting,
    )
    for message in messages:
        if message.task_id not in maybe and message.future is not None:
            message.future.set_exception(error)
    error.pool = state.pool(futures)
    return error
