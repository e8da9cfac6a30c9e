"""Default plugin ``services``: the machinery shared by every local service.

Declares the general keys (``CELERY_START_LOCAL_WORKERS``, ``CELERY_START_TIMEOUT``,
``CELERY_LOG_LEVEL``, ``CELERY_LOG_DIR``), starts the services on the first send, and
spawns each one with the running interpreter, tied to this process by a lifeline.
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
from flask_execute.fallback import CHOICE_ENV
from flask_execute.markers import hookimpl
from flask_execute.processes import ServiceProcess, spawn
from flask_execute.runtime import WORKER_ENV
from flask_execute.supervisor import Supervisor

if TYPE_CHECKING:
    from flask import Flask

    from flask_execute.runtime import AppState
    from flask_execute.services import Service

logger = logging.getLogger("flask_execute")

KEYS: dict[str, Any] = {
    # Start the local services on the first submit (never in eager mode).
    "CELERY_START_LOCAL_WORKERS": True,
    # Seconds to wait for local services to be ready (and to stop).
    "CELERY_START_TIMEOUT": 10.0,
    # Log level of every local service.
    "CELERY_LOG_LEVEL": "info",
    # Folder of the services' logs, lock and beat schedule (default: instance/celery).
    "CELERY_LOG_DIR": None,
}

_LEVELS = ("debug", "info", "warning", "error", "critical", "fatal")


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(app: Flask, config: Mapping[str, Any]) -> None:
    require_seconds(config, "CELERY_START_TIMEOUT")
    level = config["CELERY_LOG_LEVEL"]
    if not isinstance(level, str) or level.lower() not in _LEVELS:
        raise ConfigurationError(
            f"CELERY_LOG_LEVEL must be one of {', '.join(_LEVELS)}, not {level!r}"
        )
    folder = config["CELERY_LOG_DIR"]
    if folder is not None and not isinstance(folder, (str, os.PathLike)):
        raise ConfigurationError(f"CELERY_LOG_DIR must be a folder path, not {folder!r}")


@hookimpl
def flask_execute_before_send(state: AppState) -> None:
    Supervisor.of(state).autostart()


@hookimpl(trylast=True)
def flask_execute_spawn_service(state: AppState, service: Service) -> ServiceProcess:
    return spawn(
        service.name,
        ["-A", "flask_execute.celery", *service.argv],
        log_path=Supervisor.of(state).log_path(service),
        env=service_env(state, service),
        cwd=os.getcwd(),
    )


@hookimpl(trylast=True)
def flask_execute_service_ready(state: AppState, service: Service, process: ServiceProcess) -> bool:
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
    logger.debug("flask_execute: %s loads %s", service.name, env[APP_ENV])
    return env
