"""``create_app``: the worker loads it as ``FLASK_APP=tests.apps.factory_pkg.app:create_app``."""

from __future__ import annotations

from flask import Flask

from tests.apps import worker_app_config
from tests.apps.factory_pkg import tasks  # noqa: F401  (declares the tasks)
from tests.apps.factory_pkg.extensions import celery


def create_app(**config):
    app = Flask(__name__)
    app.config.update(worker_app_config("factory_app", "factory-app"))
    app.config.update(config)
    celery.init_app(app)
    return app
