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

from flask_execute.chunk_future import CancelMarks, ChunkFuture
from flask_execute.chunk_ids import call_id
from flask_execute.errors import BrokerUnavailable
from flask_execute.runtime import Message, display_name
from flask_execute.tasks import due_time

if TYPE_CHECKING:
    from flask_execute.futures import Future, FuturePool
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
    wire = state.wire
    name = display_name(fn)
    limit = state.app.config["CELERY_MAX_PAYLOAD"]
    shared = wire.dump_function(fn, kwargs, limit)
    room = None if limit is None else max(1, limit - len(shared))
    options = dict(options)
    due = due_time(options.get("countdown"), options.get("eta"))
    marks = CancelMarks(state.celery_app.backend)
    total = len(calls) if hasattr(calls, "__len__") else None  # type: ignore[arg-type]
    sizes = chunk_sizes(total, chunksize)
    messages: list[Message] = []
    futures: list[Future] = []
    items = iter(calls)
    index = 0

    def close(chunk: list[bytes]) -> None:
        chunk_id = uuid()
        made = [
            state.pm.make_future(state.app, call_id(chunk_id, i), name) for i in range(len(chunk))
        ]
        futures.extend(made)
        future = ChunkFuture(chunk_id, state.futures, name, made, wire, marks)
        token = wire.sign_calls(shared, chunk, task_id=chunk_id, due=due)
        chunk_options = {"shadow": name, "argsrepr": f"<{len(chunk)} calls>", **options}
        messages.append(
            Message(state.chunk_task, (token,), {}, chunk_options, name, chunk_id, future)
        )

    for size in sizes:
        chunk: list[bytes] = []
        used = 0
        for item in itertools.islice(items, size):
            args = tuple(item) if isinstance(item, (list, tuple)) else (item,)
            data = wire.dump_call(fn, args, kwargs, index=index, limit=room)
            index += 1
            if room is not None and chunk and used + len(data) > room:
                close(chunk)  # full by size before by count
                chunk, used = [], 0
            chunk.append(data)
            used += len(data)
        if not chunk:
            break
        close(chunk)
    return messages, futures


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
    messages, futures = pack_map(state, fn, calls, kwargs, options, chunksize)
    if messages:
        try:
            state.send(messages)
        except BrokerUnavailable as exc:
            raise _unavailable(state, messages, futures, exc) from exc
    return state.pool(futures)


def _unavailable(
    state: AppState, messages: list[Message], futures: list[Future], exc: BrokerUnavailable
) -> BrokerUnavailable:
    """The error of a map the broker did not take whole: chunks never sent fail their
    calls with it; those that may have arrived keep waiting."""
    maybe = set(exc.maybe_sent)
    chunks = [m.future for m in messages if isinstance(m.future, ChunkFuture)]
    waiting = [f.id for c in chunks if c.id in maybe for f in c.calls if f is not None]
    error = BrokerUnavailable(
        f"{exc}. Of the map's {len(futures)} calls, {len(waiting)} may still run; "
        "the error's pool holds every call's Future (the calls never sent fail with "
        "this error)",
        task_ids=[f.id for f in futures],
        maybe_sent=waiting,
    )
    for chunk in chunks:
        if chunk.id not in maybe:
            chunk.set_exception(error)
    error.pool = state.pool(futures)
    return error
