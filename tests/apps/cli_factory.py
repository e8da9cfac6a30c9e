"""A factory-pattern app for the CLI tests (``FLASK_APP=tests.apps.cli_factory:create_app``)."""

from __future__ import annotations

from flask import Flask

from flask_execute import Celery
from tests.apps import worker_app_config

celery = Celery()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(worker_app_config("cli-factory", "cli-factory"))
    celery.init_app(app)
    return app


def marker():
    from flask import current_app

    return current_app.config["MARKER"]
