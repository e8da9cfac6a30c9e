"""A factory-pattern app for the CLI tests (``FLASK_APP=tests.apps.cli_factory:create_app``)."""

from __future__ import annotations

import os

from flask import Flask

from flask_execute import Celery

celery = Celery()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test-secret",
        CELERY_BROKER_URL=os.environ.get("FLASK_EXECUTE_TEST_BROKER", "redis://127.0.0.1:6379/15"),
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_FLOWER=False,
        CELERY_SCHEDULER=False,
        MARKER="cli-factory",
        CELERY_TASK_DEFAULT_QUEUE="cli-factory",
    )
    celery.init_app(app)
    return app


def marker():
    from flask import current_app

    return current_app.config["MARKER"]
