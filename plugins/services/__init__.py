"""Default plugin ``services``: local services that start themselves in development.

Owns the keys of local services (``CELERY_START_LOCAL_WORKERS``,
``CELERY_START_TIMEOUT``, ``CELERY_STOP_TIMEOUT``, ``CELERY_LOG_LEVEL``) and their
machinery: the
:class:`~flask_execute.plugins.services.supervisor.ProcessSupervisor` (start on the first
send, readiness, one set per host, stop at exit), spawning each service with the
running interpreter tied to this process by a lifeline, and the development broker
fallback (:mod:`~flask_execute.plugins.services.fallback`) and the development
isolation of queues and exchanges (:mod:`~flask_execute.plugins.services.isolation`).

Blocked, local services are off: nothing starts by itself, ``celery.start()`` says
so, and there is never a fallback broker.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask_execute.config import require_seconds
from flask_execute.discovery import APP_ENV, app_import_path
from flask_execute.errors import ConfigurationError
from flask_execute.markers import hookimpl
from flask_execute.processes import COLD_GRACE, ServiceProcess, spawn
from flask_execute.runtime import WORKER_ENV, AppState

from .fallback import CHOICE_ENV, choose_broker
from .isolation import isolate
from .supervisor import ProcessSupervisor, log_path

if TYPE_CHECKING:
    from flask import Flask

    from flask_execute.services import Service

logger = logging.getLogger("flask_execute")

KEYS: dict[str, Any] = {
    # Start the local services on the first submit (never in eager mode).
    "CELERY_START_LOCAL_WORKERS": True,
    # Seconds to wait for local services to be ready.
    "CELERY_START_TIMEOUT": 10.0,
    # Seconds the running tasks of local workers get to finish when they are stopped.
    "CELERY_STOP_TIMEOUT": 10.0,
    # Log level of every local service (and of `flask celery worker|beat`).
    "CELERY_LOG_LEVEL": "info",
}

_LEVELS = ("debug", "info", "warning", "error", "critical", "fatal")

#: Kinds of service that take ``--loglevel``.
_LOGGING_KINDS = ("worker", "beat")


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(config: Mapping[str, Any]) -> None:
    require_seconds(config, "CELERY_START_TIMEOUT", "CELERY_STOP_TIMEOUT")
    level = config["CELERY_LOG_LEVEL"]
    if not isinstance(level, str) or level.lower() not in _LEVELS:
        raise ConfigurationError(
            f"CELERY_LOG_LEVEL must be one of {', '.join(_LEVELS)}, not {level!r}"
        )


@hookimpl
def flask_execute_configure_celery(app: Flask, settings: dict[str, Any]) -> None:
    # Runs before the config plugin's defaults: only a managed development setup falls
    # back to the filesystem broker.
    managed = bool(app.config["CELERY_START_LOCAL_WORKERS"])
    if managed and not settings.get("task_always_eager"):
        choose_broker(app, settings)
        isolate(app, settings)


@hookimpl(trylast=True)
def flask_execute_make_supervisor(app: Flask) -> ProcessSupervisor:
    return ProcessSupervisor(AppState.of(app))


@hookimpl
def flask_execute_prepare_send(app: Flask) -> None:
    supervisor = AppState.of(app).supervisor
    if isinstance(supervisor, ProcessSupervisor):
        supervisor.autostart()


@hookimpl
def flask_execute_add_command_defaults(app: Flask) -> Mapping[str, Mapping[str, Any]]:
    level = app.config["CELERY_LOG_LEVEL"]
    return {kind: {"loglevel": level} for kind in _LOGGING_KINDS}


@hookimpl(trylast=True)
def flask_execute_spawn_service(app: Flask, service: Service) -> ServiceProcess:
    state = AppState.of(app)
    argv = list(service.argv)
    given = any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in argv)
    if service.kind in _LOGGING_KINDS and not given:
        argv.append(f"--loglevel={app.config['CELERY_LOG_LEVEL']}")
    cold_grace = None
    if service.kind == "worker":
        # A soft shutdown the user configured runs first within the cold shutdown.
        soft = float(state.celery_app.conf.worker_soft_shutdown_timeout or 0.0)
        cold_grace = COLD_GRACE + soft
    return spawn(
        service.name,
        ["-A", "flask_execute.celery", *argv],
        log_path=log_path(state, service),
        env=service_env(state, service),
        cwd=os.getcwd(),
        kind=service.kind,
        stop_timeout=float(app.config["CELERY_STOP_TIMEOUT"]),
        cold_grace=cold_grace,
    )


@hookimpl(trylast=True)
def flask_execute_check_ready(service: Service, process: ServiceProcess) -> bool:
    return process.signalled()


def service_env(state: AppState, service: Service) -> dict[str, str]:
    """The environment of a service: this one, plus how to load this very app."""
    env = dict(os.environ)
    env[APP_ENV] = app_import_path(state.app)
    env[WORKER_ENV] = "1"
    broker = str(state.celery_app.conf.broker_url)
    env[CHOICE_ENV] = "filesystem" if broker.startswith("filesystem") else "redis"
    # The service imports the app the way this process did: same search path.
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([os.getcwd(), *paths]))
    env.update(service.env)
    logger.debug("%s loads %s", service.name, env[APP_ENV])
    return env
