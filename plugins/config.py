"""Default plugin ``config``: the core's own keys and Celery defaults.

Celery's serializers stay JSON-only: submitted functions travel as signed tokens inside
the JSON body (see :mod:`flask_execute.wire`), so pickle is never accepted off the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask_execute.config import require_seconds
from flask_execute.errors import ConfigurationError
from flask_execute.fallback import choose_broker
from flask_execute.markers import hookimpl

if TYPE_CHECKING:
    from flask import Flask

KEYS: dict[str, Any] = {
    # Signing keys for submitted functions and their results (first signs, all verify).
    "CELERY_SIGNING_KEYS": None,
    # Seconds submit() may spend reaching the broker before it raises BrokerUnavailable.
    "CELERY_SUBMIT_TIMEOUT": 10.0,
    # Names of plugins (default or installed) not to register.
    "CELERY_DISABLED_PLUGINS": [],
    # Seconds between polls of a result backend without pub/sub (not Redis).
    "CELERY_RESULT_POLL_INTERVAL": 0.01,
}


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(app: Flask, config: Mapping[str, Any]) -> None:
    require_seconds(config, "CELERY_SUBMIT_TIMEOUT", "CELERY_RESULT_POLL_INTERVAL")
    disabled = config["CELERY_DISABLED_PLUGINS"]
    if isinstance(disabled, str) or not all(isinstance(n, str) for n in disabled):
        raise ConfigurationError(
            f"CELERY_DISABLED_PLUGINS must be a list of plugin names, not {disabled!r}"
        )
    keys = config["CELERY_SIGNING_KEYS"]
    if keys is not None and not isinstance(keys, (str, bytes, list, tuple)):
        raise ConfigurationError(
            f"CELERY_SIGNING_KEYS must be a string or a list of strings, not {type(keys).__name__}"
        )


@hookimpl(trylast=True)
def flask_execute_configure_celery(app: Flask, settings: dict[str, Any]) -> None:
    choose_broker(app, settings)
    broker = str(settings["broker_url"])
    if broker.startswith(("redis://", "rediss://", "unix://")):
        settings.setdefault("result_backend", broker)
    settings.setdefault("task_serializer", "json")
    settings.setdefault("result_serializer", "json")
    settings.setdefault("accept_content", ["json"])
    settings.setdefault("result_accept_content", ["json"])
    settings.setdefault("broker_connection_retry_on_startup", True)
    # submit() must fail within CELERY_SUBMIT_TIMEOUT when the broker is down.
    timeout = float(app.config["CELERY_SUBMIT_TIMEOUT"])
    settings.setdefault("broker_connection_timeout", max(timeout / 4, 0.5))
    settings.setdefault(
        "task_publish_retry_policy",
        {"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )
    settings.setdefault("redis_socket_connect_timeout", max(timeout / 4, 0.5))
    settings.setdefault("redis_backend_health_check_interval", 30)
