"""The plugin manager: one per Flask application.

The essential plugin (``core``) is always registered; the default plugins are
registered by dotted name (pytest's ``default_plugins`` model), third-party plugins
come from the ``flask_execute`` entry-point group (pluggy's own loader), app-local ones
from ``Celery(app, plugins=[...])``. Names listed in ``CELERY_DISABLED_PLUGINS`` are
blocked before anything registers.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

from flask_execute import hookspecs
from flask_execute.errors import ConfigurationError
from flask_execute.markers import NAME

if TYPE_CHECKING:
    import celery
    from flask import Blueprint, Flask

    from flask_execute.futures import Future
    from flask_execute.listener import ResultSource
    from flask_execute.pool import FuturePool
    from flask_execute.runtime import Message
    from flask_execute.serializers import Serializer
    from flask_execute.services import Service, ServiceProcess, Supervisor

logger = logging.getLogger("flask_execute.hooks")

#: Plugins that cannot be blocked: the core's own keys and Celery settings.
ESSENTIAL_PLUGINS: tuple[tuple[str, str], ...] = (("core", "flask_execute.essentials"),)

#: The default plugins, by registration name and module. Each is an ordinary plugin:
#: block one with ``CELERY_DISABLED_PLUGINS = ["name"]``.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("config", "flask_execute.plugins.config"),
    ("cloudpickle", "flask_execute.plugins.serializer"),
    ("dispatch", "flask_execute.plugins.dispatch"),
    ("appcontext", "flask_execute.plugins.appcontext"),
    ("cancel", "flask_execute.plugins.cancel"),
    ("futures", "flask_execute.plugins.futures"),
    ("eager", "flask_execute.plugins.eager"),
    ("services", "flask_execute.plugins.services"),
    ("workers", "flask_execute.plugins.workers"),
    ("flower", "flask_execute.plugins.flower"),
    ("beat", "flask_execute.plugins.beat"),
    ("tasks", "flask_execute.plugins.tasks"),
    ("scheduling", "flask_execute.plugins.scheduling"),
    ("status", "flask_execute.plugins.status"),
    ("dependencies", "flask_execute.plugins.dependencies"),
)

#: First-result hooks the core cannot work without, with the default plugin that
#: answers each: without an implementation ``init_app`` fails naming the hook.
REQUIRED_HOOKS: dict[str, str] = {
    "flask_execute_make_serializer": "cloudpickle",
    "flask_execute_send": "dispatch",
    "flask_execute_run_task": "dispatch",
    "flask_execute_make_future": "futures",
    "flask_execute_make_pool": "futures",
    "flask_execute_make_result_source": "dispatch",
}

#: Which default plugin answers each first-result hook (for error messages).
_DEFAULT_ANSWERS: dict[str, str] = {
    **REQUIRED_HOOKS,
    "flask_execute_spawn_service": "services",
    "flask_execute_make_schedule": "scheduling",
    "flask_execute_make_blueprint": "status",
    "flask_execute_send_after": "dependencies",
}


def _import(name: str, module: str) -> object | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # a real import error inside the plugin
            raise
        logger.warning("default plugin %r (%s) is not installed", name, module)
        return None


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with one small typed method per hook call.

    :param blocked: plugin names not to register (``CELERY_DISABLED_PLUGINS``).
    :param plugins: app-local plugins, registered last.
    :param load_entry_points: load the ``flask_execute`` entry-point group.
    """

    def __init__(
        self,
        *,
        blocked: Iterable[str] = (),
        plugins: Sequence[object] = (),
        load_entry_points: bool = True,
    ) -> None:
        super().__init__(NAME)
        self.add_hookspecs(hookspecs)
        for name, module in ESSENTIAL_PLUGINS:
            self.register(importlib.import_module(module), name=name)
        self._blocked_defaults: list[tuple[str, str]] = []
        for name in blocked:
            if any(name == essential for essential, _ in ESSENTIAL_PLUGINS):
                raise ConfigurationError(
                    f"CELERY_DISABLED_PLUGINS lists {name!r}, an essential plugin that cannot "
                    "be disabled; remove it from the list"
                )
            self.set_blocked(name)
        for name, module in DEFAULT_PLUGINS:
            if self.is_blocked(name):
                self._blocked_defaults.append((name, module))
                continue
            plugin = _import(name, module)
            if plugin is not None:
                self.register(plugin, name=name)
        if load_entry_points:
            self.load_setuptools_entrypoints(NAME)
        for plugin in plugins:
            if self.is_registered(plugin):
                continue
            name = getattr(plugin, "__name__", None) or repr(plugin)
            if not self.is_blocked(name):
                self.register(plugin, name=name)
        self.check_pending()

    def check_required(self) -> None:
        """Raise :exc:`~flask_execute.ConfigurationError` for a required hook nobody
        answers (called at ``init_app``)."""
        for hook, default in REQUIRED_HOOKS.items():
            impls = getattr(self.hook, hook).get_hookimpls()
            if not any(not (i.wrapper or i.hookwrapper) for i in impls):
                raise ConfigurationError(_unanswered(hook, default, self.is_blocked(default)))

    def trace_hooks(self) -> None:
        """Log every hook call and its result on the ``flask_execute.hooks`` logger."""
        self.trace.root.setwriter(lambda message: logger.debug("%s", message.rstrip()))
        self.enable_tracing()

    def _answer(self, hook: str, result: Any) -> Any:
        # A first-result hook the core needs: None means nobody answered.
        if result is None:
            default = _DEFAULT_ANSWERS.get(hook, "")
            raise ConfigurationError(_unanswered(hook, default, self.is_blocked(default)))
        return result

    # -- configuration -----------------------------------------------------------------

    def config_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        for answer in reversed(self.hook.flask_execute_add_config_keys()):
            keys.update(answer)
        return keys

    def blocked_config_keys(self) -> dict[str, str]:
        """The keys the blocked default plugins would declare, by key: plugin name (so
        that a key left in the config is reported as the blocked plugin's)."""
        found: dict[str, str] = {}
        for name, module in self._blocked_defaults:
            declare = getattr(_import(name, module), "flask_execute_add_config_keys", None)
            if callable(declare):
                found.update(dict.fromkeys(declare(), name))
        return found

    def validate_config(self, app: Flask, config: Mapping[str, Any]) -> None:
        self.hook.flask_execute_validate_config(app=app, config=config)

    def configure_celery(self, app: Flask, settings: dict[str, Any]) -> None:
        self.hook.flask_execute_configure_celery(app=app, settings=settings)

    def init_app(self, app: Flask) -> None:
        self.hook.flask_execute_init_app(app=app)

    # -- serialization -----------------------------------------------------------------

    def make_serializer(self, app: Flask) -> Serializer:
        serializer: Serializer = self._answer(
            "flask_execute_make_serializer", self.hook.flask_execute_make_serializer(app=app)
        )
        return serializer

    # -- execution ---------------------------------------------------------------------

    def send(self, app: Flask, messages: Sequence[Message]) -> list[Future]:
        futures: list[Future] = self._answer(
            "flask_execute_send", self.hook.flask_execute_send(app=app, messages=messages)
        )
        return futures

    def send_after(self, app: Flask, messages: Sequence[Message]) -> list[Future]:
        futures: list[Future] = self._answer(
            "flask_execute_send_after",
            self.hook.flask_execute_send_after(app=app, messages=messages),
        )
        return futures

    def prepare_send(self, app: Flask) -> None:
        self.hook.flask_execute_prepare_send(app=app)

    def run_task(self, app: Flask, task: celery.Task, run: Callable[[], Any]) -> Any:
        # None is a legitimate task result here: required-ness is checked at init_app.
        return self.hook.flask_execute_run_task(app=app, task=task, run=run)

    # -- futures -----------------------------------------------------------------------

    def make_future(self, app: Flask, task_id: str, name: str | None) -> Future:
        future: Future = self._answer(
            "flask_execute_make_future",
            self.hook.flask_execute_make_future(app=app, task_id=task_id, name=name),
        )
        return future

    def make_pool(self, app: Flask, futures: list[Future]) -> FuturePool:
        pool: FuturePool = self._answer(
            "flask_execute_make_pool", self.hook.flask_execute_make_pool(app=app, futures=futures)
        )
        return pool

    def cancel_task(self, app: Flask, task_id: str) -> bool:
        # Not required: unanswered, the caller falls back to Celery's revoke.
        return bool(self.hook.flask_execute_cancel_task(app=app, task_id=task_id))

    def make_result_source(self, app: Flask) -> ResultSource:
        source: ResultSource = self._answer(
            "flask_execute_make_result_source", self.hook.flask_execute_make_result_source(app=app)
        )
        return source

    def make_blueprint(
        self, app: Flask, name: str, authorize: Callable[[Any], bool] | None
    ) -> Blueprint:
        blueprint: Blueprint = self._answer(
            "flask_execute_make_blueprint",
            self.hook.flask_execute_make_blueprint(app=app, name=name, authorize=authorize),
        )
        return blueprint

    # -- services ----------------------------------------------------------------------

    def make_supervisor(self, app: Flask) -> Supervisor | None:
        supervisor: Supervisor | None = self.hook.flask_execute_make_supervisor(app=app)
        return supervisor

    def describe_services(self, app: Flask) -> list[Service]:
        found: list[Service] = []
        for answer in self.hook.flask_execute_describe_services(app=app):
            found.extend(answer)
        return found

    def spawn_service(self, app: Flask, service: Service) -> ServiceProcess:
        process: ServiceProcess = self._answer(
            "flask_execute_spawn_service",
            self.hook.flask_execute_spawn_service(app=app, service=service),
        )
        return process

    def check_ready(self, app: Flask, service: Service, process: ServiceProcess) -> bool:
        return bool(self.hook.flask_execute_check_ready(app=app, service=service, process=process))

    def add_command_defaults(self, app: Flask) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for answer in reversed(self.hook.flask_execute_add_command_defaults(app=app)):
            for command, options in answer.items():
                merged.setdefault(command, {}).update(options)
        return merged

    # -- scheduling --------------------------------------------------------------------

    def make_schedule(self, app: Flask, schedule: Any, crontab_kwargs: Mapping[str, Any]) -> Any:
        return self._answer(
            "flask_execute_make_schedule",
            self.hook.flask_execute_make_schedule(
                app=app, schedule=schedule, crontab_kwargs=crontab_kwargs
            ),
        )

    def add_beat_entries(self, app: Flask) -> dict[str, Any]:
        entries: dict[str, Any] = {}
        for answer in reversed(self.hook.flask_execute_add_beat_entries(app=app)):
            entries.update(answer)
        return entries


def _unanswered(hook: str, default: str, blocked: bool) -> str:
    why = (
        f"the default plugin {default!r} that answers it is blocked by "
        f"CELERY_DISABLED_PLUGINS; remove {default!r} from there, or register"
        if blocked
        else "register"
    )
    return (
        f"no plugin answers {hook}, which flask_execute needs: {why} a plugin that "
        f"implements {hook} and returns an answer (see the hook reference, docs/hooks.rst)"
    )
