"""The ``Celery`` Flask extension: the one class users hold.

It registers applications (configuration, plugin manager, Celery app, per-app record)
and offers, for the current application, dynamic submission (``submit``, ``apply``,
``map``, ``get``), registered and scheduled tasks (``task``, ``schedule``), the local
services (``start``, ``stop``, ``status``, ``processes``, ``logs``) and Celery's remote
control (``inspect``, ``control``). The work behind each is done by plugins and by the
modules named in their docstrings.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

import celery
from flask import Blueprint, Flask, current_app, has_app_context

from flask_execute import config_snapshot
from flask_execute.batching import Batch, open_batch
from flask_execute.calls import map_calls, pop_options, submit_call
from flask_execute.celery_app import CeleryApp, main_name
from flask_execute.chunk_task import register_chunk_task
from flask_execute.config import celery_settings
from flask_execute.errors import ServiceError
from flask_execute.essentials import check_disabled_plugins
from flask_execute.executor import CeleryExecutor
from flask_execute.futures import Future
from flask_execute.inspection import Control, Inspect, online_workers
from flask_execute.manager import PluginManager
from flask_execute.markers import NAME
from flask_execute.options import PUBLISH_OPTIONS, Options, check_options
from flask_execute.pool import FuturePool
from flask_execute.registry import TaskRegistry
from flask_execute.runtime import AppState
from flask_execute.schedules import ScheduleRegistry
from flask_execute.stream_future import StreamFuture
from flask_execute.tasks import register_run_task, task_class

#: Keywords of ``submit``/``map`` taken as Celery options, not passed to the function.
#: Use :meth:`~flask_execute.Celery.options` to pass any of them to the function itself.
SUBMIT_OPTIONS = PUBLISH_OPTIONS

R = TypeVar("R")
Y = TypeVar("Y")


class Celery:
    """Runs functions on Celery workers, inside the Flask application context.

    :param app: the Flask application; or call :meth:`init_app` later.
    :param base_task: a :class:`celery.Task` subclass every task derives from; it keeps
        its behaviour and still runs in the application context.
    :param plugins: plugins (modules or objects with hook implementations) registered
        for every application this extension serves, after the installed ones.

    One extension object can serve several applications; each gets its own Celery app,
    plugin manager and record in ``app.extensions``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        base_task: type[celery.Task] | None = None,
        plugins: Sequence[object] = (),
    ) -> None:
        self.base_task: type[celery.Task] = base_task or celery.Task
        self.plugins = list(plugins)
        self._apps: list[weakref.ref[Flask]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``: configure Celery from ``app.config``.

        :raises ConfigurationError: an extension key has a wrong value, or a hook the
            core needs has no answer (its default plugin is blocked).
        """
        if NAME in app.extensions:
            raise RuntimeError(f"flask_execute is already registered on {app.name!r}")
        config_snapshot.apply(app)  # a service we started: the starting app's config
        blocked = check_disabled_plugins(app.config.get("CELERY_DISABLED_PLUGINS", []))
        pm = PluginManager(blocked=blocked, plugins=self.plugins)
        pm.check_required()
        keys = pm.config_keys()
        for key, default in keys.items():
            app.config.setdefault(key, copy.copy(default))
        pm.validate_config(app, app.config)
        if app.config["CELERY_TRACE_HOOKS"]:
            pm.trace_hooks()
        settings = celery_settings(app.config, keys, pm.blocked_config_keys())
        pm.configure_celery(app, settings)
        celery_app = CeleryApp(
            main_name(app), task_cls=task_class(self.base_task), set_as_current=False
        )
        celery_app.conf.update(settings)
        state = AppState(app, pm, celery_app, self)
        celery_app.flask_execute_state = state
        register_run_task(state)
        register_chunk_task(state)
        app.extensions[NAME] = state
        app.extensions["celery"] = self
        ref = weakref.ref(app)
        self._apps.append(ref)
        try:
            pm.init_app(app)
        except BaseException:  # a plugin refused the app: leave it unregistered
            del app.extensions[NAME], app.extensions["celery"]
            self._apps.remove(ref)
            raise

    # -- which application -------------------------------------------------------------

    def state(self, app: Flask | None = None) -> AppState:
        """Return the record of ``app``, the current app, or the only registered app."""
        if app is None and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            if app.extensions.get("celery") is not self:
                app = None
        if app is None:
            apps = [a for a in (ref() for ref in self._apps) if a is not None]
            if len(apps) != 1:
                raise RuntimeError(
                    "several applications use this extension: run inside an "
                    "application context (with app.app_context(): ...)"
                    if apps
                    else "the application this extension served is gone (garbage-"
                    "collected): the extension holds it weakly, so keep a reference to "
                    "your Flask app"
                    if self._apps
                    else "no application registered: call Celery(app) or celery.init_app(app)"
                )
            app = apps[0]
        return AppState.of(app)

    @property
    def celery_app(self) -> celery.Celery:
        """The :class:`celery.Celery` application of the current Flask app."""
        return self.state().celery_app

    # -- dynamic submission ------------------------------------------------------------

    @overload
    def submit(  # type: ignore[overload-overlap]  # a stream's result is its return value
        self, fn: Callable[..., Generator[Y, Any, R]], /, *args: Any, **kwargs: Any
    ) -> StreamFuture[Y, R]: ...

    @overload
    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker and return its :class:`Future`.

        The keywords ``queue``, ``countdown``, ``eta``, ``expires`` and ``priority`` are
        Celery options, not arguments of ``fn`` (see :meth:`apply` to pass them).

        :raises SerializationError: ``fn`` or an argument cannot be serialized; nothing
            was sent.
        :raises BrokerUnavailable: the broker did not answer within
            ``CELERY_SUBMIT_TIMEOUT``.
        """
        options = pop_options(kwargs)
        return submit_call(self.state(), fn, args, kwargs, options)

    def apply(
        self,
        fn: Callable[..., R],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Future[R]:
        """Run ``fn(*args, **kwargs)`` on a worker with any Celery publishing option.

        Unlike :meth:`submit`, no keyword of ``fn`` is reserved. The options of
        :meth:`options` are read as there; any other goes to Celery unchecked.
        """
        return submit_call(self.state(), fn, tuple(args), kwargs or {}, options)

    @contextlib.contextmanager
    def batch(self, chunksize: int | None = None) -> Iterator[Batch]:
        """Hold the calls made in the block, then send them together::

            with celery.batch():
                futures = [celery.submit(add, i, i) for i in range(2000)]

        Each ``submit`` returns its Future at once (with its final id) and packs the
        call into a chunk of calls of the same function and options, as ``map`` does
        (``chunksize`` calls at most; default 1, 2, 4 ... up to 500). Other sends in the
        block (``map``, registered tasks) are held as they are. When the block ends,
        everything goes to the broker in one round trip; if it raises, nothing is sent
        and every Future of the batch is cancelled. A block inside another joins it.

        :raises SerializationError: at the ``submit`` whose call cannot be serialized.
        :raises BrokerUnavailable: at the end of the block, when the broker did not
            take every message; the error's ``pool`` holds every Future of the batch.
        """
        if chunksize is not None:
            check_options({"chunksize": chunksize})
        yield from open_batch(self.state(), chunksize)

    def map(self, fn: Callable[..., R], /, *calls: Any, **kwargs: Any) -> FuturePool[R]:
        """Run ``fn`` once per positional argument, each the argument list of one call.

        ``celery.map(add, [1, 2], [3, 4])`` runs ``add(1, 2)`` and ``add(3, 4)``; keyword
        arguments go to every call (``celery.map(add, [1], [3], y=2)``); an argument
        that is not a list or tuple is a single argument. The keywords ``queue``,
        ``countdown``, ``eta``, ``expires`` and ``priority`` are options, as for
        :meth:`submit`.

        Calls travel in chunks, many per Celery message, and each still gets its own
        :class:`Future`. Every call is serialized before any is sent. See
        :meth:`options` to set the chunk size.

        :raises SerializationError: a call cannot be serialized; nothing was sent.
        :raises BrokerUnavailable: the broker did not take every chunk; the error's
            ``pool`` holds every call's Future (those never sent fail with it).
        """
        return map_calls(self.state(), fn, calls, kwargs, pop_options(kwargs))

    def starmap(
        self, fn: Callable[..., R], calls: Iterable[Any], /, **kwargs: Any
    ) -> FuturePool[R]:
        """:meth:`map` over an iterable of calls (a generator too, read once, as the
        calls are packed): ``celery.starmap(add, ((i, i) for i in range(10_000)))``."""
        return map_calls(self.state(), fn, calls, kwargs, pop_options(kwargs))

    def options(self, **options: Any) -> Options:
        """Options for the calls sent through the returned object, so that no keyword
        of the function is taken::

            celery.options(queue="reports", countdown=5).submit(build, queue="x")
            celery.options(chunksize=100).map(add, *pairs)

        Takes Celery's publishing options (``queue``, ``countdown``, ``eta``,
        ``expires``, ``priority``), time limits (``time_limit``, ``soft_time_limit``),
        retries (``retries``, ``retry_on``, ``retry_backoff``, ``retry_backoff_max``,
        ``retry_jitter``), deduplication (``key``, ``key_keep``) and ``chunksize``
        (calls per message for ``map``; default automatic); see :doc:`composing`. An
        unknown name or a bad value fails at once, naming what is accepted.
        """
        return Options(self, options)

    def executor(self, **options: Any) -> CeleryExecutor:
        """A :class:`concurrent.futures.Executor` sending to the current application's
        workers with ``options`` (those of :meth:`options`), for code written against
        the standard executor API::

            with celery.executor(queue="reports") as executor:
                totals = list(executor.map(add, [1, 2], [3, 4]))
            await loop.run_in_executor(celery.executor(), build, 42)

        See :doc:`composing` for where it differs from a thread pool.
        """
        return CeleryExecutor(self.state(), options)

    def blueprint(
        self,
        name: str = "flask_execute",
        *,
        authorize: Callable[[Future | FuturePool], bool] | None = None,
        app: Flask | None = None,
    ) -> Blueprint:
        """The status endpoint, as a blueprint to register under a prefix of your choice
        (see :doc:`progress`)::

            app.register_blueprint(celery.blueprint(), url_prefix="/tasks")

        :param name: the blueprint's name, the prefix of its endpoint names.
        :param authorize: your own check: called with the Future or FuturePool a token
            names; when it returns a false value, the request gets 404.
        :param app: the application, when several use this extension.
        """
        state = self.state(app)
        return state.pm.make_blueprint(state.app, name, authorize)

    def get(self, task_id: str) -> Future[Any]:
        """Return the Future of a task submitted earlier, here or elsewhere.

        :raises UnknownTaskError: nothing is known of ``task_id``.
        """
        return self.state().futures.get(task_id)

    # -- registered and scheduled tasks ------------------------------------------------

    @functools.cached_property
    def task(self) -> TaskRegistry:
        """Register tasks: ``@celery.task``; find them: ``celery.task.add``."""
        return TaskRegistry(self)

    @functools.cached_property
    def schedule(self) -> ScheduleRegistry:
        """Schedule tasks: ``@celery.schedule(hour=0, minute=0)``."""
        return ScheduleRegistry(self.task)

    # -- local services ----------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Start every configured local service and return when all are ready.

        Workers of ``CELERY_WORKERS``, flower when ``CELERY_FLOWER``, beat when
        ``CELERY_SCHEDULER`` and a schedule exists; unlike the start on first
        ``submit()``, this ignores ``CELERY_START_LOCAL_WORKERS``. Services already
        running are left as they are.

        :param timeout: seconds to wait for readiness (default ``CELERY_START_TIMEOUT``).
        :raises ServiceError: a service exited or was not ready in time (the message
            names it, its log file and its last log lines; nothing is left running),
            or no plugin runs local services.
        """
        supervisor = self.state().supervisor
        if supervisor is None:
            raise ServiceError(
                "local services are off: no plugin answers flask_execute_make_supervisor "
                "(the 'services' plugin is blocked by CELERY_DISABLED_PLUGINS); start "
                "workers yourself with `flask celery worker`"
            )
        supervisor.start(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop every local service this process started, gracefully first.

        Workers finish their running tasks and give their prefetched ones back to the
        queue (Celery's warm shutdown). Tasks still running after ``timeout`` are
        cancelled (cold shutdown): ``acks_late`` ones go back to the queue, others fail
        with ``WorkerLostError``; whatever is left a few seconds later is killed.

        :param timeout: seconds running tasks get to finish (default
            ``CELERY_STOP_TIMEOUT``).
        """
        supervisor = self.state().supervisor
        if supervisor is not None:
            supervisor.stop(timeout)

    def status(self, timeout: float = 1.0) -> dict[str, str]:
        """Ping the workers in-process: ``{"foo@host": "OK", ...}``.

        Every worker that answers is listed, configured or not. Local workers
        (``CELERY_WORKERS``) that should be running but do not answer within
        ``timeout`` are ``"OFFLINE"``: those that start by themselves
        (``CELERY_START_LOCAL_WORKERS``) or that this process started. The call waits
        for those and for every worker that answered the last call; once they all
        answered, it listens a moment longer (as long as the answers took, at least
        0.2 s) for the others, then returns
        (:func:`~flask_execute.inspection.online_workers`).

        :raises ~flask_execute.BrokerUnavailable: the broker did not answer.
        """
        state = self.state()
        supervisor = state.supervisor
        # The services plugin's key, read with a default: blocked, nothing is local.
        local = bool(state.app.config.get("CELERY_START_LOCAL_WORKERS"))
        running = supervisor.running() if supervisor is not None else {}
        expected = {
            s.node
            for s in state.pm.describe_services(state.app)
            if s.node and (local or s.name in running)
        }
        # A worker that answered last time is waited for too, so a busy one is not
        # dropped from the list by the short listen; one that stays silent is forgotten.
        online = online_workers(state.celery_app, expected | state.answered, timeout)
        state.answered = set(online)
        found = dict.fromkeys(sorted(online), "OK")
        for node in sorted(expected - online):
            found[node] = "OFFLINE"
        return found

    @property
    def processes(self) -> dict[str, int]:
        """The running local services of this process: name -> pid."""
        supervisor = self.state().supervisor
        running = supervisor.running() if supervisor is not None else {}
        return {name: process.pid for name, process in running.items()}

    @property
    def logs(self) -> dict[str, str]:
        """The log file of every configured local service: name -> path."""
        supervisor = self.state().supervisor
        return supervisor.log_paths() if supervisor is not None else {}

    # -- remote control ----------------------------------------------------------------

    @property
    def inspect(self) -> Inspect:
        """Celery's inspect API for the current app's workers (:class:`Inspect`)."""
        return Inspect(self.celery_app)

    @property
    def control(self) -> Control:
        """Celery's control API for the current app's workers (:class:`Control`)."""
        return Control(self.celery_app)
