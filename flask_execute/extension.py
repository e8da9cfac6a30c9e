"""The ``Celery`` Flask extension: configuration and dynamic submission."""

from __future__ import annotations

import copy
import os
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import celery
from flask import Flask, current_app, has_app_context

from flask_execute.config import celery_settings
from flask_execute.futures import Future, FuturePool
from flask_execute.inspection import InspectMixin
from flask_execute.manager import PluginManager
from flask_execute.markers import NAME
from flask_execute.registry import TasksMixin
from flask_execute.runtime import AppState
from flask_execute.services import ServicesMixin
from flask_execute.tasks import register_run_task, task_class

#: Keywords of ``submit``/``map`` taken as Celery options, not passed to the function.
#: Use :meth:`~flask_execute.Celery.apply` to pass any of them to the function itself.
SUBMIT_OPTIONS = ("queue", "countdown", "eta", "expires", "priority")


class Celery(ServicesMixin, TasksMixin, InspectMixin):
    """Runs functions on Celery workers, inside the Flask application context.

    :param app: the Flask application; or call :meth:`init_app` later.
    :param base_task: a :class:`celery.Task` subclass every task derives from; it keeps
        its behaviour and still runs in the application context.
    :param plugins: plugins (modules or objects with hook implementations) registered
        for every application this extension serves, after the installed ones.

    One extension object can serve several applications; each gets its own Celery app,
    plugin manager and state in ``app.extensions``.
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
        super().__init__()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``: configure Celery from ``app.config``.

        :raises ConfigurationError: an extension key has a wrong value.
        """
        if NAME in app.extensions:
            raise RuntimeError(f"flask_execute is already registered on {app.name!r}")
        pm = PluginManager(
            blocked=app.config.get("CELERY_DISABLED_PLUGINS", ()), plugins=self.plugins
        )
        keys = pm.config_keys()
        for key, default in keys.items():
            app.config.setdefault(key, copy.copy(default))
        pm.validate_config(app, app.config)
        settings = celery_settings(app.config, keys)
        pm.configure_celery(app, settings)
        celery_app = CeleryApp(
            _main_name(app), task_cls=task_class(self.base_task), set_as_current=False
        )
        celery_app.conf.update(settings)
        state = AppState(app, pm, celery_app, self)
        celery_app.flask_execute_state = state
        register_run_task(state)
        app.extensions[NAME] = state
        app.extensions["celery"] = self
        self._apps.append(weakref.ref(app))
        pm.init_app(app, state)

    # -- which application -------------------------------------------------------------

    def state(self, app: Flask | None = None) -> AppState:
        """Return the state for ``app``, the current app, or the only registered app."""
        if app is None and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            if app.extensions.get("celery") is not self:
                app = None
        if app is None:
            apps = [a for a in (ref() for ref in self._apps) if a is not None]
            if len(apps) != 1:
                raise RuntimeError(
                    "no application registered: call Celery(app) or celery.init_app(app)"
                    if not apps
                    else "several applications use this extension: run inside an "
                    "application context (with app.app_context(): ...)"
                )
            app = apps[0]
        return AppState.of(app)

    @property
    def celery_app(self) -> celery.Celery:
        """The :class:`celery.Celery` application of the current Flask app."""
        return self.state().celery_app

    # -- dynamic submission ------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker and return its :class:`Future`.

        The keywords ``queue``, ``countdown``, ``eta``, ``expires`` and ``priority`` are
        Celery options, not arguments of ``fn`` (see :meth:`apply` to pass them).

        :raises SerializationError: ``fn`` or an argument cannot be serialized; nothing
            was sent.
        :raises BrokerUnavailable: the broker did not answer within
            ``CELERY_SUBMIT_TIMEOUT``.
        """
        options = _pop_options(kwargs)
        return self.apply(fn, args, kwargs, **options)

    def apply(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker with any Celery publishing option.

        Unlike :meth:`submit`, no keyword of ``fn`` is reserved.
        """
        state = self.state()
        message = state.call_message(fn, tuple(args), kwargs or {}, options)
        return state.send([message])[0]

    def map(self, fn: Callable[..., Any], /, *calls: Any, **kwargs: Any) -> FuturePool:
        """Run ``fn`` once per positional argument, each the argument list of one call.

        ``celery.map(add, [1, 2], [3, 4])`` runs ``add(1, 2)`` and ``add(3, 4)``; keyword
        arguments go to every call (``celery.map(add, [1], [3], y=2)``); an argument
        that is not a list or tuple is a single argument. Every call is serialized
        before any is sent.
        """
        options = _pop_options(kwargs)
        state = self.state()
        messages = [
            state.call_message(
                fn, tuple(c) if isinstance(c, (list, tuple)) else (c,), kwargs, options
            )
            for c in calls
        ]
        return state.pool(state.send(messages) if messages else [])

    def get(self, task_id: str) -> Future:
        """Return the Future of a task submitted earlier, here or elsewhere.

        :raises UnknownTaskError: nothing is known of ``task_id``.
        """
        return self.state().get(task_id)


class CeleryApp(celery.Celery):  # type: ignore[misc]
    """Celery application of one Flask app.

    Its result backend does not subscribe to each task it publishes (Celery's Redis
    backend does, for ``AsyncResult.get``): the application's one result listener feeds
    every Future, and ``AsyncResult.get`` still subscribes on demand.
    """

    def _get_backend(self) -> Any:
        backend = super()._get_backend()
        backend.on_task_call = _no_subscription
        return backend


def _no_subscription(producer: Any, task_id: str) -> None:
    return None


def _pop_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {key: kwargs.pop(key) for key in SUBMIT_OPTIONS if key in kwargs}


def _main_name(app: Flask) -> str:
    # Task names of a script run as `python app.py` must match the worker's, which
    # imports the same file as a module named after it.
    if app.import_name == "__main__":
        import sys

        file = getattr(sys.modules["__main__"], "__file__", None)
        if file:
            return str(os.path.splitext(os.path.basename(file))[0])
    return str(app.import_name)
