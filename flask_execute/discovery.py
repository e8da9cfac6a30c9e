"""Find the Flask application for a worker, and tell a worker how to find it.

Loading is Flask's own discovery (:class:`flask.cli.ScriptInfo`): ``FLASK_APP`` as
``module``, ``module:app``, ``module:create_app()`` or ``path/to/app.py``, else
``app.py``/``wsgi.py`` in the working directory.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click
from flask import Flask
from flask.cli import ScriptInfo

from flask_execute import config_snapshot
from flask_execute.errors import ConfigurationError
from flask_execute.importing import loading
from flask_execute.markers import NAME
from flask_execute.runtime import WORKER_ENV, AppState

if TYPE_CHECKING:
    import celery

#: Environment variable naming the app for a worker; falls back to ``FLASK_APP``.
APP_ENV = "FLASK_EXECUTE_APP"

_FACTORIES = ("create_app", "make_app")


def cwd_importable() -> None:
    """Put the working directory on ``sys.path``, as ``flask`` does, so that
    ``FLASK_APP=module`` imports."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def load_app(import_path: str | None = None) -> Flask:
    """Load the Flask application a worker serves, marking this process as a worker."""
    os.environ[WORKER_ENV] = "1"
    path = import_path or os.environ.get(APP_ENV) or os.environ.get("FLASK_APP")
    cwd_importable()
    with loading(path):
        app = ScriptInfo(app_import_path=path).load_app()
    # Again once the factory returned: config it set after init_app must not win.
    config_snapshot.apply(app)
    return app


def load_celery_app(import_path: str | None = None) -> celery.Celery:
    """Return the Celery application of the Flask app (``-A flask_execute.celery``)."""
    return celery_app_of(load_app(import_path))


def celery_app_of(app: Flask) -> celery.Celery:
    """Return the Celery application of ``app``; fail clearly if it does not use us."""
    if NAME not in app.extensions:
        raise ConfigurationError(
            f"the Flask app {app.name!r} does not use flask_execute: call Celery(app) or "
            "celery.init_app(app) where the app is created."
        )
    return AppState.of(app).celery_app


def load_cli_app(ctx: click.Context) -> Flask:
    """The Flask app of the ``flask`` command (``--app``, ``FLASK_APP``, ``app.py``);
    a :exc:`click.ClickException` if it does not use flask_execute."""
    info = ctx.ensure_object(ScriptInfo)
    cwd_importable()
    try:
        with loading(info.app_import_path):
            app = info.load_app()
        celery_app_of(app)
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from None
    return app


def app_import_path(app: Flask) -> str:
    """Return an import path under which a new process loads this very app.

    ``FLASK_APP`` (or the path the ``flask`` command was given) wins; else the module
    that created the app, with the attribute holding it, or with its factory; a script
    run as ``python app.py`` is named by its file path.
    """
    for candidate in (os.environ.get(APP_ENV), _cli_import_path(), os.environ.get("FLASK_APP")):
        if candidate:
            return candidate
    module = sys.modules.get(app.import_name)
    if module is None:
        raise _undiscoverable(app)
    if app.import_name == "__main__":
        file = getattr(module, "__file__", None)
        if not file:
            raise _undiscoverable(app)
        location = os.path.abspath(file)
    else:
        location = app.import_name
    for attr, value in vars(module).items():
        if value is app and not attr.startswith("_"):
            return f"{location}:{attr}"
    for factory in _FACTORIES:
        if callable(getattr(module, factory, None)):
            return f"{location}:{factory}()"
    raise _undiscoverable(app)


def _cli_import_path() -> str | None:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    info = ctx.find_object(ScriptInfo)
    return info.app_import_path if info is not None else None


def _undiscoverable(app: Flask) -> ConfigurationError:
    return ConfigurationError(
        f"cannot tell workers how to load the Flask app {app.name!r}: set FLASK_APP "
        "(e.g. FLASK_APP='mypackage:create_app') before starting workers."
    )
