"""Per-application state: the Celery app, the plugin manager and the live futures.

One :class:`AppState` exists per Flask application registered with the extension,
stored in ``app.extensions["flask_execute"]``; the extension object itself holds none.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery import states

from flask_execute.errors import RemoteError, UnknownTaskError
from flask_execute.futures import Future, FuturePool
from flask_execute.markers import NAME

if TYPE_CHECKING:
    import celery
    from celery.result import AsyncResult
    from flask import Flask

    from flask_execute.listener import ResultSource
    from flask_execute.manager import PluginManager
    from flask_execute.wire import Wire

logger = logging.getLogger("flask_execute")

#: Environment variable set in every process that runs tasks (workers we spawn, and
#: any process that loads the app through ``-A flask_execute.celery``): such a process
#: never starts local services of its own.
WORKER_ENV = "FLASK_EXECUTE_WORKER"

_ERROR_MODULE = RemoteError.__module__


@dataclass
class Message:
    """One task call on its way to :func:`~flask_execute.hookspecs.flask_execute_send`.

    :param task: the Celery task to run.
    :param args: its positional arguments (JSON-serializable).
    :param kwargs: its keyword arguments (JSON-serializable).
    :param options: Celery publishing options (``queue``, ``countdown`` ...).
    :param name: the display name of the call.
    """

    task: celery.Task
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


class AppState:
    """Everything flask_execute keeps for one Flask application.

    :ivar app: the Flask application.
    :ivar pm: its plugin manager.
    :ivar celery_app: its Celery application.
    :ivar extension: the :class:`~flask_execute.Celery` extension object.
    """

    def __init__(
        self,
        app: Flask,
        pm: PluginManager,
        celery_app: celery.Celery,
        extension: Any,
    ) -> None:
        self.app = app
        self.pm = pm
        self.celery_app = celery_app
        self.extension = extension
        self._wire: Wire | None = None
        self.in_worker = os.environ.get(WORKER_ENV) == "1"
        #: Free-form storage for plugins, keyed by plugin name.
        self.plugin_data: dict[str, Any] = {}
        self._pending: dict[str, Future] = {}
        self._lock = threading.RLock()  # hooks run under it may start the source
        self._source: ResultSource | None = None
        self._prepared = False
        self._callbacks: ThreadPoolExecutor | None = None
        _STATES.add(self)

    # -- conveniences ------------------------------------------------------------------

    @property
    def wire(self) -> Wire:
        """Packs calls and results; built on first use, when the signing key is read."""
        if self._wire is None:
            from flask_execute.signing import Signer, signing_keys
            from flask_execute.wire import Wire

            self._wire = Wire(self.pm.make_serializer(self.app), Signer(signing_keys(self.app)))
        return self._wire

    @property
    def eager(self) -> bool:
        """Whether tasks run in-process (``task_always_eager``)."""
        return bool(self.celery_app.conf.task_always_eager)

    @property
    def run_task(self) -> celery.Task:
        """The task that runs every submitted function."""
        from flask_execute.tasks import RUN_TASK

        return self.celery_app.tasks[RUN_TASK]

    @classmethod
    def of(cls, app: Flask) -> AppState:
        """Return the state of ``app``; raise if the extension was not registered."""
        try:
            state: AppState = app.extensions[NAME]
        except KeyError:
            raise RuntimeError(
                f"flask_execute is not registered on {app.name!r}: call Celery(app) or "
                "celery.init_app(app) first."
            ) from None
        return state

    # -- sending -----------------------------------------------------------------------

    def send(self, messages: list[Message]) -> list[Future]:
        """Send messages through the plugins, preparing the process on first use."""
        if not self._prepared and not self.eager:
            with self._lock:
                if not self._prepared:
                    self.pm.before_send(self)
                    self._prepared = True
        return self.pm.send(self, messages)

    def reset_prepared(self) -> None:
        """Make the next send call ``flask_execute_before_send`` again (after a stop)."""
        self._prepared = False

    def call_message(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
    ) -> Message:
        """Pack one call of ``fn`` into a message for the run task."""
        if not callable(fn):
            raise TypeError(f"submit() needs a callable as its first argument, not {fn!r}")
        token = self.wire.pack_call(fn, args, kwargs)
        name = _display_name(fn)
        return Message(self.run_task, (token,), {}, {"shadow": name, **options}, name)

    def pool(self, futures: list[Future]) -> FuturePool:
        return self.pm.make_pool(self, futures)

    # -- tracking and resolution -------------------------------------------------------

    def track(self, future: Future) -> None:
        """Register ``future`` so the result source resolves it."""
        source = self.source()
        self._pending[future.id] = future
        source.submitted(future.id, future.name)

    def fail_pending(self, error: BaseException) -> None:
        """Fail every Future still waiting here (e.g. local workers could not start)."""
        for task_id in self.pending_ids():
            future = self._pending.pop(task_id, None)
            if future is not None:
                future.set_exception(error)

    def untrack(self, task_id: str) -> None:
        self._pending.pop(task_id, None)

    def pending_ids(self) -> list[str]:
        return list(self._pending)

    def source(self) -> ResultSource:
        """The application's result source, started on first use."""
        if self._source is None:
            with self._lock:
                if self._source is None:
                    source = self.pm.make_result_source(self)
                    source.start()
                    self._source = source
        return self._source

    def deliver(self, task_id: str, meta: Mapping[str, Any]) -> None:
        """Feed a task's state (a Celery result meta) to its Future, if tracked here."""
        future = self._pending.get(task_id)
        if future is None:
            return
        status = meta.get("status", states.PENDING)
        if status in states.READY_STATES:
            self._pending.pop(task_id, None)
            self.resolve(future, status, meta.get("result"))
        elif status != states.PENDING:
            future.set_state(status, meta.get("result"))

    def resolve(self, future: Future, status: str, result: Any) -> None:
        """Finish ``future`` with a final Celery state and its result."""
        if status == states.REVOKED:
            future._set_cancelled()
            return
        try:
            if status == states.SUCCESS:
                value = self.wire.unpack_result(result)
            else:
                value = None
                exc = self.decode_exception(result)
        except Exception as error:  # a forged result or one that cannot be rebuilt
            future.set_exception(error)
            return
        if status == states.SUCCESS:
            future.set_result(value)
        else:
            future.set_exception(exc)

    def decode_exception(self, result: Any) -> BaseException:
        """Rebuild a task's exception from what the backend stored."""
        if isinstance(result, RemoteError):
            return self.wire.unpack_error(result)
        if isinstance(result, BaseException):
            return result
        if isinstance(result, dict):
            if (
                result.get("exc_type") == "RemoteError"
                and result.get("exc_module") == _ERROR_MODULE
            ):
                return self.wire.unpack_error(RemoteError(*result.get("exc_message", ())))
            exc: BaseException = self.celery_app.backend.exception_to_python(result)
            return exc
        return RuntimeError(f"task failed with {result!r}")

    def get(self, task_id: str) -> Future:
        """Return a Future for ``task_id``.

        :raises ~flask_execute.UnknownTaskError: nothing is known of ``task_id``.
        """
        existing = self._pending.get(task_id)
        if existing is not None:
            return existing
        source = self.source()
        meta = source.lookup(task_id)
        if meta is None:
            raise UnknownTaskError(
                f"no task with id {task_id!r}: it was never submitted to this broker, or "
                "its result expired (result_expires)."
            )
        future = self.pm.make_future(self, task_id, meta.get("name"))
        self._pending[task_id] = future
        source.watch(task_id)
        self.deliver(task_id, meta)
        return future

    # -- what a Future needs -----------------------------------------------------------

    def revoke(self, task_id: str, *, terminate: bool) -> None:
        if not self.eager:
            self.celery_app.control.revoke(task_id, terminate=terminate)

    def async_result(self, task_id: str) -> AsyncResult:
        return self.celery_app.AsyncResult(task_id)

    def run_callback(self, fn: Callable[[], None]) -> None:
        """Run a done callback in the app context, off the result listener's thread."""

        def in_context() -> None:
            with self.app.app_context():
                fn()

        source = self._source
        if source is not None and source.is_listener_thread():
            if self._callbacks is None:
                self._callbacks = ThreadPoolExecutor(1, thread_name_prefix="flask_execute-cb")
            self._callbacks.submit(in_context)
        else:
            in_context()

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the result source and the callback thread (futures stay as they are)."""
        source, self._source = self._source, None
        if source is not None:
            source.stop()
        callbacks, self._callbacks = self._callbacks, None
        if callbacks is not None:
            callbacks.shutdown(wait=False)

    def _after_fork(self) -> None:
        # Threads do not survive fork: the child starts its own listener when needed.
        self._source = None
        self._callbacks = None
        self._pending = {}
        self._lock = threading.RLock()  # hooks run under it may start the source
        self._prepared = False


def _display_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


_STATES: weakref.WeakSet[AppState] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for state in list(_STATES):
        state._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
