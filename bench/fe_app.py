"""The flask_execute side of the benchmark: a Flask app and the function it submits.

Workers load it as ``FLASK_APP=fe_app:app`` (``celery -A flask_execute.celery worker``);
the benchmark imports it under the same name, so ``add`` travels by reference.
"""

from __future__ import annotations

import os
import time

import redis
from flask import Flask

from flask_execute import Celery, current_task

#: The queue of this side; the raw Celery side has its own.
QUEUE = "bench_fe"

app = Flask(__name__)
app.config.update(
    SECRET_KEY="bench-secret-key-of-32-bytes-or-more",
    CELERY_BROKER_URL=os.environ.get("FLASK_EXECUTE_BENCH_BROKER", "redis://127.0.0.1:6379/15"),
    CELERY_TASK_DEFAULT_QUEUE=QUEUE,
    # the benchmark starts its workers itself, with the same settings as raw Celery's
    CELERY_START_LOCAL_WORKERS=False,
    CELERY_FLOWER=False,
    CELERY_SCHEDULER=False,
)
celery = Celery(app)
# The status endpoint (bench/watch.py serves it; registering it costs the others nothing).
app.register_blueprint(celery.blueprint(), url_prefix="/tasks")


def add(x: int, y: int) -> int:
    return x + y


def report_loop(n: int) -> int:
    """Report progress on every step of a tight loop (coalesced by flask_execute)."""
    for i in range(1, n + 1):
        current_task.progress(i, n)
    return n


def report_clock(steps: int, pace: float) -> int:
    """Report ``steps`` times, ``pace`` seconds apart, with the worker's clock in meta."""
    for i in range(1, steps + 1):
        time.sleep(pace)
        current_task.progress(i, steps, t=time.time())
    return steps


def hold(key: str) -> str:
    """Run until ``key`` is pushed in the benchmark's Redis database."""
    client = redis.Redis.from_url(app.config["CELERY_BROKER_URL"])
    client.blpop([key], timeout=600)
    return "released"
