"""Carry an app's effective configuration to the local services it starts.

A service rebuilds the app from its import path alone (``module:create_app()``): an app
made by a factory with overrides (``create_app({"CELERY_BROKER_URL": ..., "TESTING":
True})``, the way Flask's tutorial writes test fixtures) would come back with its
default configuration, another broker, other keys. So the process that starts services
writes the picklable part of its ``app.config`` to a *snapshot* (cloudpickle, one entry
per key), one file per service, and names it in :data:`SNAPSHOT_ENV`. The service
applies it in ``init_app``, before any setting is read, and again once the factory that
built the app returned (config set after ``init_app`` wins there otherwise).

The snapshot holds secrets (``SECRET_KEY``) and is unpickled, so it is protected by the
file system, not signed: a 0600 file in a private 0700 folder (:func:`tempfile.mkdtemp`)
only its owner can read or replace. A service refuses a snapshot that is a link, is not
its user's, or that others may read or write. The service removes its file once read;
the starter removes what is left once the services are ready or failed.

Workers started by hand (``flask celery worker``) get no snapshot: they need the same
configuration from the environment or the factory's defaults (see ``docs/testing.rst``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from flask_execute.errors import ConfigurationError

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_execute")

#: Environment variable naming the snapshot file of a service we start.
SNAPSHOT_ENV = "FLASK_EXECUTE_CONFIG_SNAPSHOT"

_VERSION = 1

#: Snapshots this process read: (app name, config), by path (a file is read once).
_read: dict[str, tuple[str, dict[str, Any]]] = {}


def write(app: Flask) -> Path:
    """Write the picklable part of ``app.config`` to a new owner-only file.

    A value that cannot be pickled is left out (logged at debug level): the service
    keeps its own value for that key.
    """
    values: dict[str, bytes] = {}
    for key, value in app.config.items():
        try:
            values[key] = cloudpickle.dumps(value)
        except Exception as exc:  # any value's own pickling error: leave that key out
            logger.debug("config key %s is not carried to local services: %s", key, exc)
    folder = Path(tempfile.mkdtemp(prefix="flask_execute-config-"))  # mode 0700
    path = folder / "config.pickle"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        pickle.dump({"version": _VERSION, "app": app.name, "config": values}, fh)
    return path


def remove(path: str | os.PathLike[str]) -> None:
    """Remove a snapshot and its private folder (nothing if already gone)."""
    folder = Path(path).parent
    if folder.name.startswith("flask_execute-config-"):
        shutil.rmtree(folder, ignore_errors=True)
    else:  # pragma: no cover - a path we did not make: the file only
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def apply(app: Flask) -> bool:
    """Apply this process's snapshot (:data:`SNAPSHOT_ENV`) to ``app`` if it was taken
    of an app of the same name; ``True`` if it was applied.

    :raises ConfigurationError: the snapshot is not this user's private file.
    """
    path = os.environ.get(SNAPSHOT_ENV)
    if not path:
        return False
    snapshot = _read.get(path) or _load(path)
    if snapshot is None:
        return False
    name, config = snapshot
    if name != app.name:
        return False
    app.config.update(config)
    return True


def _load(path: str) -> tuple[str, dict[str, Any]] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        logger.warning(
            "%s names %s, which is gone: the app keeps its own configuration", SNAPSHOT_ENV, path
        )
        _read[path] = ("", {})
        return None
    except OSError as exc:
        raise ConfigurationError(f"{SNAPSHOT_ENV}: cannot open {path}: {exc}") from None
    with os.fdopen(fd, "rb") as fh:
        _check_private(path, os.fstat(fh.fileno()), os.stat(Path(path).parent))
        data = pickle.load(fh)
    remove(path)  # read once: the secrets it holds go at once
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        raise ConfigurationError(f"{SNAPSHOT_ENV}: {path} is not a config snapshot")
    config: dict[str, Any] = {}
    for key, blob in data["config"].items():
        try:
            config[key] = pickle.loads(blob)
        except Exception as exc:  # e.g. a class this process cannot import
            logger.warning("config key %s of the starting app cannot be loaded: %s", key, exc)
    _read[path] = (str(data["app"]), config)
    return _read[path]


def _check_private(path: str, file: os.stat_result, folder: os.stat_result) -> None:
    uid = os.geteuid()
    for what, info in (("file", file), ("folder", folder)):
        if info.st_uid != uid or stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigurationError(
                f"{SNAPSHOT_ENV}: refusing {path}: its {what} must belong to this user "
                f"(uid {uid}) and be private (mode 0600 file in a 0700 folder), not uid "
                f"{info.st_uid} mode {stat.S_IMODE(info.st_mode):04o}"
            )
