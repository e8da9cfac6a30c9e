"""An app whose worker reports when a task starts (``CELERY_TASK_TRACK_STARTED``), for
``shutdown(cancel_futures=True)`` of ``celery.executor()``: tests/test_executor.py."""

from __future__ import annotations

import redis
from flask import Flask, current_app

from flask_execute import Celery
from tests.apps import worker_app_config

app = Flask(__name__)
app.config.update(worker_app_config("executor", "executor-app"))
app.config.update(CELERY_TASK_TRACK_STARTED=True, CELERY_CANCEL_GRACE=0)
celery = Celery(app)


def wait_for_release(key):
    """Wait until ``key`` is pushed in Redis (the run's database); report nothing."""
    client = redis.Redis.from_url(current_app.config["CELERY_BROKER_URL"])
    return "released" if client.blpop([key], timeout=60) else "timed out"


def add(x, y):
    return x + y
