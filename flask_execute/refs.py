"""Futures as arguments: what travels in their place, and what the worker reads back.

``celery.submit(g, f)``, where ``f`` is a Future: the call is packed with a :class:`Ref`
to ``f``'s task in ``f``'s place, and sent once ``f``'s task is done (the default plugin
``dependencies`` holds it until then). On the worker, :func:`resolve` reads each input's
stored outcome and puts its result where the Ref was, or fails the call with
:exc:`~flask_execute.errors.DependencyFailed`, naming the input, its exception as the
cause.

Futures are found among the positional arguments, the keyword arguments, and one level
inside them: the items of a list or tuple and the values of a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import states

from flask_execute.cancelling import CancelMarks
from flask_execute.chunk_future import ChunkFuture
from flask_execute.chunk_ids import split_call_id
from flask_execute.errors import DependencyFailed, RemoteTraceback
from flask_execute.futures import Future

if TYPE_CHECKING:
    from flask_execute.runtime import AppState


@dataclass(frozen=True)
class Ref:
    """An input of a call, in the place of its Future.

    :ivar task_id: the input's task id (``<chunk id>.<index>`` for a call of a map).
    :ivar name: the input's display name, for errors.
    :ivar where: where the Future was given (``positional argument 0`` ...).
    :ivar outcome: in eager mode, the input's outcome known already: ``(True, value)``,
        ``(False, exception)``, or ``(False, None)`` for a cancelled input.
    """

    task_id: str
    name: str | None
    where: str
    outcome: tuple[bool, Any] | None = None

    @property
    def waits_for(self) -> str:
        """The task whose stored outcome holds this input's (a call's chunk)."""
        split = split_call_id(self.task_id)
        return split[0] if split is not None else self.task_id


def take_futures(
    state: AppState, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], Mapping[str, Any], list[Ref]]:
    """Put a :class:`Ref` in the place of every Future among a call's arguments.

    :return: the arguments, and the Refs put in (none: the arguments as they were).
    :raises ValueError: a Future of another application, or one made by hand.
    """
    refs: list[Ref] = []
    if not any(map(_holds, args)) and not any(map(_holds, kwargs.values())):
        return args, kwargs, refs  # most calls: one look at each argument

    def swap(value: Any, where: str) -> Any:
        if isinstance(value, Future):
            ref = _ref(state, value, where)
            refs.append(ref)
            return ref
        if type(value) in (list, tuple) and any(isinstance(v, Future) for v in value):
            items = [swap(v, f"item {i} of {where}") for i, v in enumerate(value)]
            return type(value)(items)
        if type(value) is dict and any(isinstance(v, Future) for v in value.values()):
            return {k: swap(v, f"item {k!r} of {where}") for k, v in value.items()}
        return value

    new_args = tuple(swap(a, f"positional argument {i}") for i, a in enumerate(args))
    new_kwargs = {k: swap(v, f"keyword argument {k!r}") for k, v in kwargs.items()}
    if not refs:
        return args, dict(kwargs), refs
    return new_args, new_kwargs, refs


def _holds(value: Any) -> bool:
    """Whether ``value`` is a Future or holds one, one level down."""
    if isinstance(value, Future):
        return True
    kind = type(value)
    if kind is list or kind is tuple:
        return any(isinstance(v, Future) for v in value)
    return kind is dict and any(isinstance(v, Future) for v in value.values())


def waits_for(refs: Iterable[Ref]) -> tuple[str, ...]:
    """The tasks whose stored outcomes a call with ``refs`` waits for, each once (none
    for inputs whose outcome travels with the call, in eager mode)."""
    return tuple(dict.fromkeys(r.waits_for for r in refs if r.outcome is None))


def _ref(state: AppState, future: Future, where: str) -> Ref:
    if isinstance(future, ChunkFuture) or future._owner is not state.futures:
        raise ValueError(
            f"{where} is {future!r}, a Future of "
            + ("no application (made by hand)" if future._owner is None else "another application")
            + f": only Futures of {state.app.name!r} can be passed to its calls"
        )
    outcome = None
    if state.eager:  # run already: what it gave travels with the call
        if not future.done():
            raise TypeError(
                f"{where} is {future!r}, held by celery.batch() until the block ends: in "
                "eager mode a call runs at once, so it cannot take a Future of the same "
                "batch; pass it after the block"
            )
        outcome = _outcome_of(future)
    return Ref(future.id, future.name, where, outcome)


def _outcome_of(future: Future) -> tuple[bool, Any]:
    if future.cancelled():
        return False, None
    error = future.exception(0)
    return (True, future.result(0)) if error is None else (False, error)


def resolve(
    state: AppState, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """On the worker: put each input's result in the place of its :class:`Ref`.

    :raises DependencyFailed: an input failed, was cancelled, or has no stored outcome.
    """
    read = _reader(state)

    def swap(value: Any) -> Any:
        if isinstance(value, Ref):
            return read(value)
        if type(value) in (list, tuple) and any(isinstance(v, Ref) for v in value):
            return type(value)(swap(v) for v in value)
        if type(value) is dict and any(isinstance(v, Ref) for v in value.values()):
            return {k: swap(v) for k, v in value.items()}
        return value

    return tuple(swap(a) for a in args), {k: swap(v) for k, v in kwargs.items()}


def _reader(state: AppState) -> Callable[[Ref], Any]:
    seen: dict[str, Future] = {}  # one read per input, however often it is passed

    def read(ref: Ref) -> Any:
        if ref.outcome is not None:
            ok, value = ref.outcome
        else:
            future = seen.get(ref.task_id)
            if future is None:
                future = seen[ref.task_id] = _stored(state, ref)
            ok, value = (False, None) if future.cancelled() else _settled(future)
        if ok:
            return value
        what = f"{ref.where} ({ref.name or 'task'} {ref.task_id})"
        if value is None:
            raise DependencyFailed(f"{what} was cancelled, so this call did not run")
        message = f"{what} failed with {type(value).__name__}: {value}"
        cause = value.__cause__
        traceback = str(cause) if isinstance(cause, RemoteTraceback) else None
        raise DependencyFailed(message, value, traceback)

    return read


def _settled(future: Future) -> tuple[bool, Any]:
    if not future.done():
        return False, RuntimeError(
            f"its outcome is not stored (state {future.state}): it expired "
            "(result_expires), or the task never ran"
        )
    return _outcome_of(future)


def _stored(state: AppState, ref: Ref) -> Future:
    """A Future of ``ref``'s input, resolved from its stored outcome (if it has one)."""
    backend = state.celery_app.backend
    future: Future = Future(ref.task_id, None, ref.name)
    meta = backend.get_task_meta(ref.waits_for)
    status = meta.get("status", states.PENDING)
    if status not in states.READY_STATES:
        return future
    split = split_call_id(ref.task_id)
    if split is None:
        state.futures.resolve(future, status, meta.get("result"))
        return future
    calls: list[Future | None] = [None] * split[1] + [future]
    marks = CancelMarks(backend)
    chunk = ChunkFuture(split[0], state.futures, ref.name, calls, state.wire, marks, whole=False)
    state.futures.resolve(chunk, status, meta.get("result"))
    return future
