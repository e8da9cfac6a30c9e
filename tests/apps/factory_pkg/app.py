"""``create_app``: the worker loads it as ``FLASK_APP=tests.apps.factory_pkg.app:create_app``."""

from __future__ import annotations

import os

from flask import Flask

from tests.apps.factory_pkg import tasks  # noqa: F401  (declares the tasks)
from tests.apps.factory_pkg.extensions import celery


def create_app(**config):
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test-secret",
        CELERY_BROKER_URL=os.environ.get("FLASK_EXECUTE_TEST_BROKER", "redis://127.0.0.1:6379/15"),
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_FLOWER=False,
        CELERY_SCHEDULER=False,
        MARKER="factory-app",
        CELERY_TASK_DEFAULT_QUEUE="factory_app",
    )
    app.config.update(config)
    celery.init_app(app)
    return app
