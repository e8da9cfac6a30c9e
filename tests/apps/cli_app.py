"""A direct-pattern app for the CLI tests: its own queue, broker from the test run."""

from __future__ import annotations

import os

from flask import Flask

from flask_execute import Celery
from tests.apps import worker_app_config

app = Flask(__name__)
app.config.update(worker_app_config("cli", "cli-app"))
celery = Celery(app)


def add(x, y):
    return x + y


def worker_env():
    return os.environ.get("FLASK_EXECUTE_WORKER")
