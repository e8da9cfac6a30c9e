"""A direct-pattern app for the CLI tests: its own queue, broker from the test run."""

from __future__ import annotations

import os

from flask import Flask

from flask_execute import Celery

app = Flask(__name__)
app.config.update(
    SECRET_KEY="test-secret",
    CELERY_BROKER_URL=os.environ.get("FLASK_EXECUTE_TEST_BROKER", "redis://127.0.0.1:6379/15"),
    CELERY_START_LOCAL_WORKERS=False,
    CELERY_FLOWER=False,
    CELERY_SCHEDULER=False,
    MARKER="cli-app",
    # its own queue: workers of these tests never take other tests' messages
    CELERY_TASK_DEFAULT_QUEUE="cli",
)
celery = Celery(app)


def add(x, y):
    return x + y


def worker_env():
    return os.environ.get("FLASK_EXECUTE_WORKER")
