"""The plugin manager: one per Flask application.

Default plugins are registered by dotted name (pytest's ``default_plugins`` model),
third-party plugins come from the ``flask_execute`` entry-point group, app-local ones
from ``Celery(app, plugins=[...])``. Names listed in ``CELERY_DISABLED_PLUGINS`` are
blocked before anything registers.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from flask_execute import hookspecs
from flask_execute.markers import NAME

if TYPE_CHECKING:
    import celery
    from flask import Flask

    from flask_execute.futures import Future, FuturePool
    from flask_execute.listener import ResultSource
    from flask_execute.processes import ServiceProcess
    from flask_execute.runtime import AppState, Message
    from flask_execute.serializers import Serializer
    from flask_execute.services import Service

#: The default plugins, by registration name and module. Each is an ordinary plugin:
#: block one with ``CELERY_DISABLED_PLUGINS = ["name"]``.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("config", "flask_execute.plugins.config"),
    ("cloudpickle", "flask_execute.plugins.serializer"),
    ("dispatch", "flask_execute.plugins.dispatch"),
    ("appcontext", "flask_execute.plugins.appcontext"),
    ("futures", "flask_execute.plugins.futures"),
    ("eager", "flask_execute.plugins.eager"),
    ("services", "flask_execute.plugins.services"),
    ("workers", "flask_execute.plugins.workers"),
    ("flower", "flask_execute.plugins.flower"),
    ("beat", "flask_execute.plugins.beat"),
    ("tasks", "flask_execute.plugins.tasks"),
    ("scheduling", "flask_execute.plugins.scheduling"),
)


@functools.cache
def _entry_point_plugins() -> tuple[tuple[str, object], ...]:
    """Load the ``flask_execute`` entry points once per process."""
    return tuple((ep.name, ep.load()) for ep in metadata.entry_points(group=NAME))


def _default_plugins() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for name, module in DEFAULT_PLUGINS:
        try:
            found.append((name, importlib.import_module(module)))
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real import error inside the plugin
                raise
    return found


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with one small typed method per hook call."""

    def __init__(
        self,
        *,
        blocked: Iterable[str] = (),
        plugins: Sequence[object] = (),
        load_entry_points: bool = True,
    ) -> None:
        super().__init__(NAME)
        self.add_hookspecs(hookspecs)
        for name in blocked:
            self.set_blocked(name)
        for name, plugin in _default_plugins():
            if not self.is_blocked(name):
                self.register(plugin, name=name)
        if load_entry_points:
            for name, plugin in _entry_point_plugins():
                if not self.is_blocked(name) and self.get_plugin(name) is None:
                    self.register(plugin, name=name)
        for plugin in plugins:
            if self.is_registered(plugin):
                continue
            name = getattr(plugin, "__name__", None) or repr(plugin)
            if not self.is_blocked(name):
                self.register(plugin, name=name)
        self.check_pending()

    # -- configuration -----------------------------------------------------------------

    def config_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        for answer in reversed(self.hook.flask_execute_add_config_keys()):
            keys.update(answer)
        return keys

    def validate_config(self, app: Flask, config: Mapping[str, Any]) -> None:
        self.hook.flask_execute_validate_config(app=app, config=config)

    def configure_celery(self, app: Flask, settings: dict[str, Any]) -> None:
        self.hook.flask_execute_configure_celery(app=app, settings=settings)

    def init_app(self, app: Flask, state: AppState) -> None:
        self.hook.flask_execute_init_app(app=app, state=state)

    # -- serialization -----------------------------------------------------------------

    def make_serializer(self, app: Flask) -> Serializer:
        serializer: Serializer = self.hook.flask_execute_make_serializer(app=app)
        return serializer

    # -- execution ---------------------------------------------------------------------

    def send(self, state: AppState, messages: Sequence[Message]) -> list[Future]:
        futures: list[Future] = self.hook.flask_execute_send(state=state, messages=messages)
        return futures

    def before_send(self, state: AppState) -> None:
        self.hook.flask_execute_before_send(state=state)

    def run_task(self, app: Flask, task: celery.Task, run: Callable[[], Any]) -> Any:
        return self.hook.flask_execute_run_task(app=app, task=task, run=run)

    # -- futures -----------------------------------------------------------------------

    def make_future(self, state: AppState, task_id: str, name: str | None) -> Future:
        future: Future = self.hook.flask_execute_make_future(
            state=state, task_id=task_id, name=name
        )
        return future

    def make_pool(self, state: AppState, futures: list[Future]) -> FuturePool:
        pool: FuturePool = self.hook.flask_execute_make_pool(state=state, futures=futures)
        return pool

    def make_result_source(self, state: AppState) -> ResultSource:
        source: ResultSource = self.hook.flask_execute_make_result_source(state=state)
        return source

    # -- services ----------------------------------------------------------------------

    def local_services(self, state: AppState) -> list[Service]:
        found: list[Service] = []
        for answer in self.hook.flask_execute_local_services(state=state):
            found.extend(answer)
        return found

    def spawn_service(self, state: AppState, service: Service) -> ServiceProcess:
        process: ServiceProcess = self.hook.flask_execute_spawn_service(
            state=state, service=service
        )
        return process

    def service_ready(self, state: AppState, service: Service, process: ServiceProcess) -> bool:
        return bool(
            self.hook.flask_execute_service_ready(state=state, service=service, process=process)
        )

    # -- scheduling --------------------------------------------------------------------

    def make_schedule(self, app: Flask, schedule: Any, crontab_kwargs: Mapping[str, Any]) -> Any:
        return self.hook.flask_execute_make_schedule(
            app=app, schedule=schedule, crontab_kwargs=crontab_kwargs
        )

    def beat_schedule(self, state: AppState) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for answer in reversed(self.hook.flask_execute_beat_schedule(state=state)):
            entries.update(answer)
        return entries
