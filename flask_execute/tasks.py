"""The Celery task class every task of an application uses, and the run task.

Every task, submitted or registered, runs through
:func:`~flask_execute.hookspecs.flask_execute_run_task`, so plugins wrap each run (the
default pushes the Flask app context and binds ``current_task``). A ``base_task`` given
to the extension keeps its behaviour: the class used is a subclass of both.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import celery
from celery import signals, states
from celery.exceptions import Ignore, Reject, Retry, WorkerLostError
from celery.utils.time import maybe_iso8601, maybe_make_aware

from flask_execute.dedup import freeing
from flask_execute.errors import SignatureError, time_limit_error
from flask_execute.refs import resolve
from flask_execute.retrying import unwrap
from flask_execute.runtime import RUN_TASK, Message
from flask_execute.shown import SHOWN_REQUEST, ShownResult, user_cause
from flask_execute.streams import STREAM_ATTRIBUTE, StreamEnd, drain, stream_writer
from flask_execute.wire import STREAM_MARK

if TYPE_CHECKING:
    from flask_execute.runtime import AppState

#: Set on the request while one call of a ``map`` chunk runs: the chunk's id.
CHUNK_ATTRIBUTE = "flask_execute_chunk"

#: Exceptions Celery uses for control flow: they pass through unwrapped.
_CONTROL_FLOW = (Retry, Ignore, Reject)

#: ``apply_async`` options only Celery's own callers pass (retries, canvas, beat): such a
#: call gets Celery's AsyncResult, as those callers expect, instead of a Future.
_CELERY_INTERNAL_OPTIONS = frozenset(
    ("task_id", "producer", "chain", "chord", "group_id", "root_id", "parent_id")
)


class TaskMixin:
    """Routes every run of a task through the application's plugins."""

    #: ``True`` on a task whose body calls the run_task hook itself (the run task, so
    #: that plugins wrap the submitted function rather than the wire envelope).
    runs_hook_itself = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = super().__call__  # type: ignore[misc]
        state: AppState | None = getattr(self.app, "flask_execute_state", None)  # type: ignore[attr-defined]
        if state is None or self.runs_hook_itself:
            return call(*args, **kwargs)
        return state.pm.run_task(app=state.app, task=self, run=lambda: call(*args, **kwargs))

    def publish(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's own ``apply_async``, beneath any override by flask_execute."""
        return super().apply_async(*args, **kwargs)  # type: ignore[misc]

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send the task and return its :class:`~flask_execute.Future`, like ``submit``.

        The call goes through :meth:`AppState.send <flask_execute.runtime.AppState.send>`
        (eager mode, local services and futures apply). Calls made by Celery itself
        (with ``task_id`` or ``producer``: retries, canvas, beat) go to :meth:`publish`.
        """
        state: AppState | None = getattr(self.app, "flask_execute_state", None)  # type: ignore[attr-defined]
        if (
            state is None
            or self.runs_hook_itself
            or not _CELERY_INTERNAL_OPTIONS.isdisjoint(options)
        ):
            return self.publish(args, kwargs, **options)
        name: str = self.name  # type: ignore[attr-defined]
        message = Message(self, tuple(args or ()), dict(kwargs or {}), options, name)  # type: ignore[arg-type]
        return state.send([message])[0]

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """``apply_async(args, kwargs)``: send the task, return its Future."""
        return self.apply_async(args, kwargs)

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kw: Any
    ) -> None:
        """Celery's ``update_state``; in eager mode it reaches the Future directly."""
        app_state: AppState | None = getattr(self.app, "flask_execute_state", None)  # type: ignore[attr-defined]
        request = self.request  # type: ignore[attr-defined]
        if app_state is not None and request.is_eager and task_id in (None, request.id):
            app_state.futures.deliver(
                str(request.id), {"status": state or states.PENDING, "result": meta}
            )
            return
        super().update_state(task_id, state, meta, **kw)  # type: ignore[misc]

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's ``retry``; the run task re-signs its call token for the retry, so
        the token's age counts from the retry's due time, not the first submission."""
        request = self.request  # type: ignore[attr-defined]
        if getattr(request, STREAM_ATTRIBUTE, None):
            raise RuntimeError(
                "current_task.retry() cannot retry a streamed call: the items it yielded "
                "are out already and would come twice. Retry inside the generator"
            )
        if getattr(request, CHUNK_ATTRIBUTE, None):
            raise RuntimeError(
                "current_task.retry() cannot retry one call of celery.map(): the call "
                "shares its message with others. Submit it on its own with "
                "celery.submit() to retry it, or retry inside the function"
            )
        state: AppState | None = getattr(self.app, "flask_execute_state", None)  # type: ignore[attr-defined]
        if self.runs_hook_itself and state is not None and args is None and request.args:
            if eta is None and countdown is None:
                countdown = self.default_retry_delay  # type: ignore[attr-defined]
            due = due_time(countdown=countdown, eta=eta)
            token = state.wire.renew_call(request.args[0], task_id=str(request.id), due=due)
            args = (token, *request.args[1:])
        for key in ("argsrepr", "kwargsrepr"):  # Celery's retry message drops them
            if getattr(request, key, None):
                options.setdefault(key, getattr(request, key))
        return super().retry(  # type: ignore[misc]
            args, kwargs, exc, throw, eta, countdown, max_retries, **options
        )


@contextlib.contextmanager
def refusing(task: celery.Task) -> Iterator[None]:
    """A :exc:`SignatureError` raised in the block names the worker that refused the
    call: with several hosts, the one whose keys differ."""
    try:
        yield
    except SignatureError as exc:
        host = task.request.hostname or socket.gethostname()
        raise SignatureError(f"worker {host} refused the call: {exc}") from None


def due_time(countdown: float | None = None, eta: datetime | str | None = None) -> float | None:
    """When a message sent with Celery's ``countdown`` or ``eta`` is due, as POSIX time
    (``None``: at once). A naive ``eta`` is UTC, as Celery reads it."""
    if countdown:
        return time.time() + float(countdown)
    when = maybe_iso8601(eta)
    return None if when is None else maybe_make_aware(when).timestamp()


_CLASSES: dict[type[celery.Task], type[celery.Task]] = {}


def task_class(base: type[celery.Task]) -> type[celery.Task]:
    """Return the task class for ``base``: :class:`TaskMixin` composed over it."""
    if issubclass(base, TaskMixin):
        return base
    if base not in _CLASSES:
        name = "FlaskTask" if base is celery.Task else f"Flask{base.__name__}"
        _CLASSES[base] = type(name, (TaskMixin, base), {"__module__": __name__})
    return _CLASSES[base]


def register_run_task(state: AppState) -> celery.Task:
    """Register the task that unpacks and runs submitted functions on ``state``'s app."""

    def run(
        task: celery.Task,
        token: str,
        stream: bool = False,
        after: list[str] | None = None,
        key: str | None = None,
        key_keep: float = 0,
    ) -> dict[str, str]:
        if key is None:
            return run_call(task, token, stream, after)
        with freeing(task, key, key_keep):  # a deduplication key, freed when it ends
            return run_call(task, token, stream, after)

    def run_call(
        task: celery.Task, token: str, stream: bool, after: list[str] | None
    ) -> dict[str, str]:
        wire, config = state.wire, state.app.config
        # Bound to the id this message runs under (a copy re-sent under another id is
        # refused) and to an age (a stale copy is refused), before anything is unpickled.
        task_id = str(task.request.id)
        max_age = config["CELERY_TOKEN_MAX_AGE"]
        with refusing(task):
            fn, args, kwargs = wire.unpack_call(token, task_id=task_id, max_age=max_age)
        fn, policy = unwrap(fn)
        limit = config["CELERY_MAX_PAYLOAD"]
        try:

            def call() -> Any:
                given, named = resolve(state, args, kwargs) if after is not None else (args, kwargs)
                value = fn(*given, **named)
                return run_stream(task, value) if stream else value

            value = state.pm.run_task(app=state.app, task=task, run=call)
            result = wire.pack_result(value, task_id=task_id, limit=limit)
            if stream:
                result[STREAM_MARK] = "1"
        except _CONTROL_FLOW:
            raise
        except Exception as exc:
            error = time_limit_error(exc, task.request.timelimit)
            tries = task.request.retries
            if policy is not None and policy.retries_for(error, tries):
                # Celery's own retry: a new message under the same id, due after the
                # backoff, so no worker slot waits it out; the Future sees RETRY.
                raise task.retry(
                    exc=wire.pack_error(error, task_id=task_id, limit=limit),
                    countdown=policy.delay(tries),
                    max_retries=policy.retries,
                ) from None
            # chained to the user's own frames: Flower and the worker's log show them
            raise wire.pack_error(error, task_id=task_id, limit=limit) from user_cause(exc)
        if state.eager:  # read back in this process: the envelope itself
            return result
        return ShownResult(result, value, config["CELERY_SHOW_VALUES"])  # type: ignore[return-value]

    def run_stream(task: celery.Task, generator: Any) -> StreamEnd:
        # Inside the run_task hook: the generator's body runs in the app context.
        setattr(task.request, STREAM_ATTRIBUTE, True)
        return drain(generator, stream_writer(task, state.wire, state.app.config))

    return register_ours(state, RUN_TASK, run)


def register_ours(state: AppState, name: str, run: Callable[..., Any]) -> celery.Task:
    """Register one of the extension's own tasks on the app's Celery app: bound, untyped,
    this app's only, shown by argsrepr (:mod:`flask_execute.shown`)."""
    register = state.celery_app.task(
        name=name,
        bind=True,
        typing=False,
        shared=False,
        lazy=False,
        runs_hook_itself=True,
        Request=SHOWN_REQUEST,
    )
    task: celery.Task = register(run)
    return task


def _fail_cancelled(
    sender: Any = None, request: Any = None, einfo: Any = None, **kwargs: Any
) -> None:
    """Fail a task without ``acks_late`` that a worker's cold shutdown cancelled.

    Celery stores such a task as ``RETRY`` although nothing will retry it (its message
    was acknowledged when it started), which would leave its Future waiting forever.
    A worker's main process sends ``task_retry`` without a ``reason`` only when it
    cancels a request (a task's own retry has one), on any worker of our apps, started
    by us or by hand.
    """
    if "reason" in kwargs or einfo is not None or request is None:
        return
    if getattr(getattr(sender, "app", None), "flask_execute_state", None) is None:
        return  # not a task of a flask_execute app
    if getattr(sender, "acks_late", True):
        return  # never acknowledged: the broker delivers the message again
    error = WorkerLostError(
        "the worker was shut down while the task ran; without acks_late its message "
        "was acknowledged when it started, so it does not run again"
    )
    sender.backend.mark_as_failure(request.id, error, request=request)


signals.task_retry.connect(_fail_cancelled, weak=False)
