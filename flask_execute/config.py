"""Translate the Flask config's ``CELERY_*`` keys into Celery settings.

Celery's own tables do the work: ``celery.app.defaults._TO_NEW_KEY`` maps the old
upper-case names (``CELERY_ALWAYS_EAGER``, ``CELERYD_CONCURRENCY``, ``BROKER_URL``...)
and ``SETTING_KEYS`` lists the new names, which the Flask config may spell with a
``CELERY_`` namespace (``CELERY_TASK_ALWAYS_EAGER``, ``CELERY_BROKER_URL``), the same
convention as ``config_from_object(..., namespace="CELERY")``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery.app.defaults import _TO_NEW_KEY, SETTING_KEYS

from flask_execute.errors import ConfigurationError

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_execute")

_PREFIXES = ("CELERY", "BROKER_")


def celery_setting_name(key: str) -> str | None:
    """Return the new-style Celery setting a Flask config key stands for, or ``None``.

    >>> celery_setting_name("CELERY_ALWAYS_EAGER")
    'task_always_eager'
    >>> celery_setting_name("CELERY_TASK_ALWAYS_EAGER")
    'task_always_eager'
    """
    new: str | None = _TO_NEW_KEY.get(key)
    if new is not None:
        return new
    if key.startswith("CELERY_"):
        candidate = key[len("CELERY_") :].lower()
        if candidate in SETTING_KEYS:
            return candidate
    return None


def celery_settings(
    config: Mapping[str, Any],
    own_keys: Iterable[str],
    blocked_keys: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Collect every Celery setting of a Flask config, in the new spelling.

    :param config: the Flask config.
    :param own_keys: the extension's own keys, which are never forwarded.
    :param blocked_keys: keys of blocked plugins, by key: the plugin's name. Never
        forwarded either; logged as ignored, naming the plugin.

    An unknown ``CELERY_*`` key is logged with the closest known spelling, not
    forwarded: Celery would ignore it silently.
    """
    own = set(own_keys)
    blocked = blocked_keys or {}
    settings: dict[str, Any] = {}
    for key, value in config.items():
        if key in own or not key.startswith(_PREFIXES):
            continue
        if key in blocked:
            logger.info("Ignoring %s: its plugin %r is disabled", key, blocked[key])
            continue
        name = celery_setting_name(key)
        if name is None:
            if key.startswith("CELERY"):
                _warn_unknown(key, own)
            continue
        settings[name] = value
    return settings


def user_key(config: Mapping[str, Any], name: str) -> str | None:
    """The Flask config key the user set for the Celery setting ``name``, if any."""
    for key in config:
        if isinstance(key, str) and key.startswith(_PREFIXES) and celery_setting_name(key) == name:
            return key
    return None


def result_backend_key(config: Mapping[str, Any]) -> str:
    """The key to fix when the result backend fails: ``CELERY_RESULT_BACKEND`` as the
    user spelled it, else the broker's key, which it defaults to."""
    own = user_key(config, "result_backend")
    if own is not None:
        return own
    broker = user_key(config, "broker_url") or "CELERY_BROKER_URL"
    return f"{broker} (the result backend is the broker unless CELERY_RESULT_BACKEND is set)"


def _warn_unknown(key: str, own: set[str]) -> None:
    known = own | set(_TO_NEW_KEY) | {f"CELERY_{k.upper()}" for k in SETTING_KEYS}
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    logger.warning("Ignoring unknown Celery setting %s%s", key, hint)


def require_seconds(config: Mapping[str, Any], *keys: str) -> None:
    """Raise :exc:`~flask_execute.ConfigurationError` unless each key is a positive
    number of seconds (for ``flask_execute_validate_config`` implementations)."""
    for key in keys:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigurationError(f"{key} must be a positive number of seconds, not {value!r}")


def files_dir(app: Flask) -> Path:
    """The folder of the files local services write: ``CELERY_LOG_DIR``, else
    ``<instance folder>/celery`` (declared by the core, read by several plugins)."""
    configured = app.config.get("CELERY_LOG_DIR")
    return Path(configured) if configured else Path(app.instance_path) / "celery"
