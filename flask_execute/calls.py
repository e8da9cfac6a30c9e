"""From a ``submit`` or ``map`` to messages: options read, calls packed, sent.

Behind :meth:`Celery.submit <flask_execute.Celery.submit>`, ``apply``, ``map``,
``starmap`` and :class:`~flask_execute.options.Options`: the options are checked and
split once (:func:`~flask_execute.options.plan`), then a single call becomes one message
for the run task and a map becomes chunks (:mod:`flask_execute.chunks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celery.utils import uuid

from flask_execute.batching import active_batch
from flask_execute.chunks import send_map
from flask_execute.dedup import send_keyed
from flask_execute.plans import PUBLISH_OPTIONS, Plan, plan
from flask_execute.refs import Ref, take_futures, waits_for
from flask_execute.retrying import with_retries
from flask_execute.runtime import Message, display_name
from flask_execute.shown import shown_options
from flask_execute.stream_future import StreamFuture, check_stream_backend, streams
from flask_execute.tasks import due_time

if TYPE_CHECKING:
    from flask_execute.futures import Future
    from flask_execute.pool import FuturePool
    from flask_execute.runtime import AppState


def pop_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the reserved keywords of ``submit``/``map`` (Celery's five publishing
    options) out of ``kwargs``."""
    return {key: kwargs.pop(key) for key in PUBLISH_OPTIONS if key in kwargs}


def submit_call(
    state: AppState,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
) -> Future:
    """Send one call of ``fn`` with ``options`` (ours, and any of Celery's); return its
    Future. Inside ``celery.batch()`` a plain call joins the batch's chunks.

    :raises TypeError, ValueError: ``fn`` is not callable, or an option is bad; nothing
        was sent.
    """
    if not callable(fn):
        raise TypeError(f"submit() needs a callable as its first argument, not {fn!r}")
    how = plan(options, extra=True)
    if how.chunksize is not None:
        how = Plan(how.publish, how.retry, how.key, how.key_keep)  # no chunk for one call
    args, kwargs, refs = take_futures(state, args, kwargs)
    batch = active_batch(state)
    if (
        batch is not None
        and how.plain
        and not refs  # a call that waits for others is held as a message of its own
        and not streams(fn)  # a stream is sent at once: its items are read as they come
        and set(how.publish) <= set(PUBLISH_OPTIONS)
    ):
        return batch.submit(fn, args, kwargs, how.publish)
    message = call_message(state, fn, args, kwargs, how, refs)
    if how.key is not None:  # sent at once, even in a batch: its Future may be another's
        return send_keyed(state, message, how.key, how.key_keep)
    return state.send([message], hold=not isinstance(message.future, StreamFuture))[0]


def call_message(
    state: AppState,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    how: Plan,
    refs: Sequence[Ref] = (),
) -> Message:
    """Pack one call of ``fn`` into a message for the run task.

    The token is bound to the message's task id and due time (``countdown``/``eta``),
    and capped at ``CELERY_MAX_PAYLOAD``. With ``refs`` (the Futures among the
    arguments, see :func:`~flask_execute.refs.take_futures`), the message waits for
    their tasks and the worker reads their results.
    """
    if how.retry is not None and streams(fn):
        raise TypeError(
            f"option retries cannot apply to {display_name(fn)}, a generator function: "
            "the items it yielded are out already and would come twice; retry inside it"
        )
    options = dict(how.publish)
    task_id = str(options.pop("task_id", None) or uuid())
    token = state.wire.pack_call(
        with_retries(fn, how.retry),  # the policy travels signed, with the function
        args,
        kwargs,
        task_id=task_id,
        due=due_time(options.get("countdown"), options.get("eta")),
        limit=state.app.config["CELERY_MAX_PAYLOAD"],
    )
    name = display_name(fn)
    shown = shown_options(fn, args, kwargs, state.app.config["CELERY_SHOW_VALUES"])
    options = {"shadow": name, **shown, **options}
    after = waits_for(refs)
    task_kwargs: dict[str, Any] = {"after": list(after)} if refs else {}
    if streams(fn):  # a generator function: its items are read as they come
        check_stream_backend(state.celery_app.backend, state.eager)
        future = state.futures.stream_future(task_id, name)
        task_kwargs["stream"] = True
        return Message(state.run_task, (token,), task_kwargs, options, name, task_id, future, after)
    return Message(state.run_task, (token,), task_kwargs, options, name, task_id, None, after)


def map_calls(
    state: AppState,
    fn: Callable[..., Any],
    calls: Iterable[Any],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
) -> FuturePool:
    """Send the calls of a map with ``options``; return the pool of their Futures.

    :raises TypeError, ValueError: an option is bad, or does not apply to a map;
        nothing was sent.
    """
    how = plan(options)
    if how.key is not None:
        raise TypeError(
            "option key names one call and cannot apply to the calls of a map: submit "
            "each call with its own key (celery.options(key=...).submit(...))"
        )
    chunksize = how.chunksize
    if "time_limit" in how.publish or "soft_time_limit" in how.publish:
        # Celery's limits hold for a whole message: one call per message keeps them each
        # call's own.
        if how.retry is not None:
            raise ValueError(
                "options retries and time_limit/soft_time_limit cannot go together in a "
                "map: its calls retry in place, inside the one message the limit holds "
                "for; submit each call (celery.options(...).submit), whose retries are "
                "new messages, each with the whole limit"
            )
        if chunksize not in (None, 1):
            raise ValueError(
                f"option chunksize={chunksize} cannot go with a time limit: a limit holds "
                "for a whole message, so a map with one sends one call per message "
                "(leave chunksize unset, or set it to 1)"
            )
        chunksize = 1
    if how.retry is not None and not streams(fn):  # send_map refuses a generator
        fn = with_retries(fn, how.retry)  # retried in its chunk (see chunk_task)
    return send_map(state, fn, calls, kwargs, how.publish, chunksize)
