"""Two apps for tests/test_shown.py, with workers sending task events (what Flower
reads): ``app`` shows argument and result values, ``hidden_app`` hides them."""

from __future__ import annotations

import redis
from flask import Flask, current_app

from flask_execute import Celery
from tests.apps import worker_app_config


def _make(show: bool, queue: str) -> tuple[Flask, Celery]:
    app = Flask(__name__)
    app.config.update(worker_app_config(queue, queue))
    app.config["CELERY_SHOW_VALUES"] = show
    app.config["CELERY_WORKER_SEND_TASK_EVENTS"] = True
    return app, Celery(app)


app, celery = _make(True, "shown")
hidden_app, hidden = _make(False, "hidden")


def add(x, y):
    return x + y


def fail(word):
    raise ValueError(f"bad {word}")


def held(key, secret=None):
    """Wait until ``key`` is pushed in the run's Redis database."""
    redis.Redis.from_url(current_app.config["CELERY_BROKER_URL"]).blpop([key], 60)
    return "released"
