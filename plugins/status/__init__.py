"""Default plugin ``status``: the status endpoint, ``celery.blueprint()``.

Serves a task's (or a pool's) state, keyed by its signed token (``future.token``), as
JSON and as server-sent events, cancels it, and serves the JavaScript helper that
watches it from a browser (:mod:`flask_execute.plugins.status.views`).

Blocked, ``celery.blueprint()`` raises :exc:`~flask_execute.ConfigurationError`
naming this plugin; tokens still work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask_execute.config import require_seconds
from flask_execute.errors import ConfigurationError
from flask_execute.markers import hookimpl

from .views import build_blueprint

if TYPE_CHECKING:
    from flask import Blueprint, Flask

KEYS: dict[str, Any] = {
    # Seconds a status token is valid after it was made (the default is result_expires').
    "CELERY_STATUS_MAX_AGE": 24 * 60 * 60,
    # Whether the endpoint shows a successful task's result (JSON values only).
    "CELERY_STATUS_RESULTS": True,
    # Seconds between two heartbeats of an idle event stream.
    "CELERY_STATUS_HEARTBEAT": 15,
}


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(config: Mapping[str, Any]) -> None:
    require_seconds(config, "CELERY_STATUS_MAX_AGE", "CELERY_STATUS_HEARTBEAT")
    if not isinstance(config["CELERY_STATUS_RESULTS"], bool):
        raise ConfigurationError(
            f"CELERY_STATUS_RESULTS must be True or False, not {config['CELERY_STATUS_RESULTS']!r}"
        )


@hookimpl(trylast=True)
def flask_execute_make_blueprint(
    app: Flask, name: str, authorize: Callable[[Any], bool] | None
) -> Blueprint:
    return build_blueprint(name, authorize)
