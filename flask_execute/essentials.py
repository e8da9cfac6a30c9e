"""The essential plugin ``core``: the core's own keys and the wire's Celery settings.

Registered on every plugin manager and never blocked (pytest's ``essential_plugins``):
it declares what the core itself reads, and keeps Celery's serializers JSON-only,
because submitted functions travel as signed tokens inside the JSON body (see
:mod:`flask_execute.wire`) and pickle must never be accepted off the wire. Once every
plugin has contributed, it refuses dangerous or malformed settings
(:mod:`flask_execute.settings_check`).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

from flask_execute.config import require_seconds
from flask_execute.errors import ConfigurationError
from flask_execute.markers import hookimpl
from flask_execute.settings_check import check_celery_settings, check_signing_keys

if TYPE_CHECKING:
    from flask import Flask

KEYS: dict[str, Any] = {
    # Names of plugins (default or installed) not to register.
    "CELERY_DISABLED_PLUGINS": [],
    # Signing keys for submitted functions and their results (first signs, all verify).
    "CELERY_SIGNING_KEYS": None,
    # Log every hook call on the "flask_execute.hooks" logger (debug level).
    "CELERY_TRACE_HOOKS": False,
    # Folder of the files local services write: logs, locks, beat's schedule
    # (default: <instance folder>/celery).
    "CELERY_LOG_DIR": None,
    # Seconds a submitted call stays valid, counted from its signing or, with a
    # countdown/eta, from when it is due (the default is result_expires' one day).
    "CELERY_TOKEN_MAX_AGE": 24 * 60 * 60,
    # Largest serialized call or result, in bytes.
    "CELERY_MAX_PAYLOAD": 16 * 1024 * 1024,
    # Show argument and result values (reprlib-cut) in Flower, events and logs.
    "CELERY_SHOW_VALUES": True,
}


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(config: Mapping[str, Any]) -> None:
    # CELERY_DISABLED_PLUGINS is checked earlier, by check_disabled_plugins: it decides
    # which plugins register, so it cannot wait for this hook.
    keys = config["CELERY_SIGNING_KEYS"]
    if keys is not None and not isinstance(keys, (str, bytes, list, tuple)):
        raise ConfigurationError(
            f"CELERY_SIGNING_KEYS must be a string or a list of strings, not {type(keys).__name__}"
        )
    if not isinstance(config["CELERY_TRACE_HOOKS"], bool):
        raise ConfigurationError(
            f"CELERY_TRACE_HOOKS must be True or False, not {config['CELERY_TRACE_HOOKS']!r}"
        )
    if not isinstance(config["CELERY_SHOW_VALUES"], bool):
        raise ConfigurationError(
            f"CELERY_SHOW_VALUES must be True or False, not {config['CELERY_SHOW_VALUES']!r}"
        )
    folder = config["CELERY_LOG_DIR"]
    if folder is not None and not isinstance(folder, (str, os.PathLike)):
        raise ConfigurationError(f"CELERY_LOG_DIR must be a folder path, not {folder!r}")
    require_seconds(config, "CELERY_TOKEN_MAX_AGE")
    cap = config["CELERY_MAX_PAYLOAD"]
    if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
        raise ConfigurationError(
            f"CELERY_MAX_PAYLOAD must be a positive number of bytes, not {cap!r}"
        )
    check_signing_keys(config)


def check_disabled_plugins(value: Any) -> list[str]:
    """``CELERY_DISABLED_PLUGINS`` as a list of names; raise on any other shape (called
    by ``init_app`` before any plugin registers)."""
    listed = isinstance(value, (list, tuple, set, frozenset))
    if not listed or not all(isinstance(name, str) for name in value):
        raise ConfigurationError(
            f"CELERY_DISABLED_PLUGINS must be a list of plugin names, not {value!r}"
        )
    return list(value)


@hookimpl(trylast=True)
def flask_execute_configure_celery(app: Flask, settings: dict[str, Any]) -> None:
    settings.setdefault("task_serializer", "json")
    settings.setdefault("result_serializer", "json")
    settings.setdefault("accept_content", ["json"])
    settings.setdefault("result_accept_content", ["json"])


@hookimpl(wrapper=True, specname="flask_execute_configure_celery")
def check_settings(app: Flask, settings: dict[str, Any]) -> Generator[None, None, None]:
    # A wrapper: the check sees the settings after every plugin has contributed.
    yield
    check_celery_settings(app.config, settings)
