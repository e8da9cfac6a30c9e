"""The per-application record: what flask_execute keeps for one Flask application.

One :class:`AppState` exists per Flask application registered with the extension,
stored in ``app.extensions["flask_execute"]``; the extension object itself holds none.
Plugins reach it with :meth:`AppState.of` and use its public attributes and methods
only.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery.utils import uuid

from flask_execute.importing import refuse_while_loading
from flask_execute.markers import NAME
from flask_execute.signing import Signer, signing_keys
from flask_execute.status_tokens import StatusTokens
from flask_execute.tracking import Tracker
from flask_execute.wire import Wire

if TYPE_CHECKING:
    import celery
    from flask import Flask

    from flask_execute.futures import Future
    from flask_execute.manager import PluginManager
    from flask_execute.pool import FuturePool
    from flask_execute.services import Supervisor

#: Environment variable set in every process that runs tasks (workers we spawn, and
#: any process that loads the app through ``-A flask_execute.celery``): such a process
#: never starts local services of its own.
WORKER_ENV = "FLASK_EXECUTE_WORKER"

#: Name of the one registered task that runs every submitted function.
RUN_TASK = "flask_execute.run"
#: Name of the registered task that runs a chunk of ``map`` calls.
RUN_CHUNK = "flask_execute.run_chunk"


def display_name(fn: Any) -> str:
    """The dotted name a submitted function's tasks are shown under."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


@dataclass
class Message:
    """One task call on its way to :func:`~flask_execute.hookspecs.flask_execute_send`.

    :param task: the Celery task to run.
    :param args: its positional arguments (JSON-serializable).
    :param kwargs: its keyword arguments (JSON-serializable).
    :param options: Celery publishing options (``queue``, ``countdown`` ...).
    :param name: the display name of the call.
    :param task_id: the Celery task id the message is published under (a new one by
        default), known before sending so that what travels can be bound to it.
    :param future: the Future the send must track and return for this message, made by
        the caller (a chunk of ``map`` brings its own); ``None``: the send makes one
        with :func:`~flask_execute.hookspecs.flask_execute_make_future`.
    :param after: the task ids whose outcome the call waits for (Futures among its
        arguments); such a message goes to
        :func:`~flask_execute.hookspecs.flask_execute_send_after`.
    """

    task: celery.Task
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    task_id: str = field(default_factory=uuid)
    future: Future | None = None
    after: tuple[str, ...] = ()

    def make_future(self, app: Flask, pm: PluginManager) -> Future:
        """The Future to track for this message: its own, or a new one from ``pm``."""
        if self.future is not None:
            return self.future
        return pm.make_future(app, self.task_id, self.name)


class AppState:
    """What flask_execute keeps for one Flask application.

    :ivar app: the Flask application.
    :ivar pm: its plugin manager.
    :ivar celery_app: its Celery application.
    :ivar extension: the :class:`~flask_execute.Celery` extension object serving it.
    :ivar futures: the :class:`~flask_execute.tracking.Tracker` of its pending Futures.
    :ivar plugin_data: free-form storage for plugins, keyed by plugin name.
    :ivar in_worker: whether this process runs tasks (it never starts local services).
    :ivar answered: the workers that answered this process's last ``status()``; the
        next one waits for them as for configured ones.
    """

    def __init__(
        self, app: Flask, pm: PluginManager, celery_app: celery.Celery, extension: Any
    ) -> None:
        self.app = app
        self.pm = pm
        self.celery_app = celery_app
        self.extension = extension
        self.plugin_data: dict[str, Any] = {}
        self.in_worker = os.environ.get(WORKER_ENV) == "1"
        self.futures = Tracker(self)
        self.answered: set[str] = set()
        self._wire: Wire | None = None
        self._tokens: StatusTokens | None = None
        # (answer,) once the plugins were asked: None is an answer too (services off).
        self._supervisor: tuple[Supervisor | None] | None = None
        self._prepared = False
        self._lock = threading.RLock()  # hooks run under it may start the result source
        _STATES.add(self)

    @classmethod
    def of(cls, app: Flask) -> AppState:
        """Return the record of ``app``; raise if the extension was not registered."""
        try:
            state: AppState = app.extensions[NAME]
        except KeyError:
            raise RuntimeError(
                f"flask_execute is not registered on {app.name!r}: call Celery(app) or "
                "celery.init_app(app) first."
            ) from None
        return state

    @property
    def wire(self) -> Wire:
        """Packs calls and results; built on first use, when the signing key is read."""
        if self._wire is None:
            self._wire = Wire(self.pm.make_serializer(self.app), Signer(signing_keys(self.app)))
        return self._wire

    @property
    def status_tokens(self) -> StatusTokens:
        """Makes and opens the tokens that name tasks over HTTP (``future.token``)."""
        if self._tokens is None:
            self._tokens = StatusTokens(signing_keys(self.app), self.app.name)
        return self._tokens

    @property
    def eager(self) -> bool:
        """Whether tasks run in-process (``task_always_eager``)."""
        return bool(self.celery_app.conf.task_always_eager)

    @property
    def run_task(self) -> celery.Task:
        """The task that runs every submitted function."""
        return self.celery_app.tasks[RUN_TASK]

    @property
    def chunk_task(self) -> celery.Task:
        """The task that runs a chunk of ``map`` calls."""
        return self.celery_app.tasks[RUN_CHUNK]

    @property
    def supervisor(self) -> Supervisor | None:
        """The supervisor of the local services, ``None`` when no plugin runs them."""
        if self._supervisor is None:
            with self._lock:
                if self._supervisor is None:
                    self._supervisor = (self.pm.make_supervisor(self.app),)
        return self._supervisor[0]

    def send(self, messages: Sequence[Message], *, hold: bool = True) -> list[Future]:
        """Send messages through the plugins; return one Future per message.

        The first send of a process (outside eager mode) calls
        :func:`~flask_execute.hookspecs.flask_execute_prepare_send` first. Inside
        :meth:`holding` for this application, the messages are handed to the holder
        instead (``celery.batch()``), which sends them later, unless ``hold`` is false
        (a stream, whose items are read as they come).
        """
        for owner, holder in _HOLDERS.get() if hold else ():
            if owner is self:
                return holder(messages)
        if not self._prepared and not self.eager:
            with self._lock:
                if not self._prepared:
                    refuse_while_loading("submits work")
                    self.pm.prepare_send(self.app)
                    self._prepared = True
        if not any(m.after for m in messages):
            return self.pm.send(self.app, messages)
        # Calls that wait for others go to their own hook; the rest are sent first.
        waits = [bool(m.after) for m in messages]
        now = [m for m, w in zip(messages, waits, strict=True) if not w]
        sent = iter(self.pm.send(self.app, now) if now else ())
        later = iter(self.pm.send_after(self.app, [m for m in messages if m.after]))
        return [next(later) if w else next(sent) for w in waits]

    @contextlib.contextmanager
    def holding(self, hold: Callable[[Sequence[Message]], list[Future]]) -> Iterator[None]:
        """Within the block (in this thread or task), :meth:`send` hands this
        application's messages to ``hold``."""
        token = _HOLDERS.set((*_HOLDERS.get(), (self, hold)))
        try:
            yield
        finally:
            _HOLDERS.reset(token)

    def reset_prepared(self) -> None:
        """Make the next send call ``flask_execute_prepare_send`` again (after a stop)."""
        self._prepared = False

    def pool(self, futures: list[Future]) -> FuturePool:
        """Group futures into the application's :class:`~flask_execute.FuturePool`."""
        return self.pm.make_pool(self.app, futures)

    def _after_fork(self) -> None:
        # Threads and locks do not survive fork: the child prepares and listens anew.
        self._lock = threading.RLock()
        self._prepared = False
        self.futures.after_fork()


_STATES: weakref.WeakSet[AppState] = weakref.WeakSet()

#: The holders of :meth:`AppState.holding` active in this context.
_HOLDERS: contextvars.ContextVar[
    tuple[tuple[AppState, Callable[[Sequence[Message]], list[Future]]], ...]
] = contextvars.ContextVar("flask_execute_holders", default=())


def _reset_after_fork() -> None:
    for state in list(_STATES):
        state._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
