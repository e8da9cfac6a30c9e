"""A factory app on RabbitMQ: an ``amqp://`` broker with the Redis result backend.

The test sets ``RABBIT_BROKER`` (a virtual host of its own), ``RABBIT_BACKEND`` (the
run's Redis database), ``RABBIT_WORKER`` (the local worker's name) and
``RABBIT_LOG_DIR``; the worker and the beat the app starts for itself inherit them and
call :func:`create_app` again, so every process runs the same configuration. The app
starts its services itself, as in development: one worker and, for its schedule, beat.
"""

from __future__ import annotations

import os
import time

import redis
from flask import Flask, current_app

from flask_execute import Celery, current_task

#: The name :func:`double` is registered under (``@celery.task``).
REGISTERED = "rabbit_app.double"

#: The schedule entry beat runs every second: it pushes to :data:`TICKS`.
ENTRY = "rabbit-tick"
TICKS = "rabbit-app:ticks"

#: Seconds any function here runs at most, whatever happens to the test.
LIMIT = 60


def create_app() -> Flask:
    env = os.environ
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="rabbit-secret-key-of-32-bytes-or-more",
        CELERY_BROKER_URL=env["RABBIT_BROKER"],
        CELERY_RESULT_BACKEND=env["RABBIT_BACKEND"],
        CELERY_WORKERS={env["RABBIT_WORKER"]: {"concurrency": 2}},
        CELERY_FLOWER=False,
        CELERY_LOG_DIR=env["RABBIT_LOG_DIR"],
        CELERY_START_TIMEOUT=30,
        CELERY_CANCEL_GRACE=0.5,
        CELERY_PROGRESS_INTERVAL=0,  # every report written: steps() blocks after two
        CELERY_BEAT_LOCK_TIMEOUT=3,
    )
    celery = Celery(app)
    celery.task(name=REGISTERED)(double)
    celery.schedule(1.0, name=ENTRY)(tick)
    return app


def _backend() -> redis.Redis:
    url = current_app.config["CELERY_RESULT_BACKEND"]
    return redis.Redis.from_url(url, socket_timeout=LIMIT + 5)


def add(x: int, y: int) -> int:
    return x + y


def double(x: int) -> int:
    return 2 * x


def tick() -> str:
    """The scheduled task: record which worker ran it."""
    hostname = str(current_task.request.hostname)
    _backend().rpush(TICKS, hostname)
    return hostname


def steps(count: int, key: str) -> int:
    """Report ``count`` steps of ``count + 1``, then wait for ``key`` in the backend."""
    for done in range(1, count + 1):
        current_task.progress(done, count + 1, stage="working")
    _backend().blpop([key], timeout=LIMIT)
    current_task.progress(count + 1, count + 1, stage="done")
    return count


def until_cancelled(key: str) -> str:
    """Say it started (``<key>:started``), then stop as soon as it is cancelled."""
    client, end = _backend(), time.monotonic() + LIMIT
    client.rpush(f"{key}:started", os.getpid())
    while not current_task.cancelled and time.monotonic() < end:
        time.sleep(0.01)
    client.set(f"{key}:cleanup", os.getpid())
    return "stopped"
