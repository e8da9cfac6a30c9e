"""An app for the stop tests: slow tasks that count, in Redis, their starts and ends.

The app is ``services_app``'s (shaped by the SVC_* variables) plus two registered tasks
that differ only in ``acks_late``. Its services load it through ``FLASK_EXECUTE_APP``
(``tests.apps.stops_app:create_app()``), so they register the same tasks.
"""

from __future__ import annotations

import os
import time

import redis
from flask import Flask

from tests.apps import services_app

#: How this app is loaded by the processes the tests start.
IMPORT_PATH = "tests.apps.stops_app:create_app()"


def create_app() -> Flask:
    app = services_app.create_app()
    celery = app.extensions["celery"]
    celery.task(name="stops.once_late", acks_late=True)(slow_the_first_time)
    celery.task(name="stops.once_early", acks_late=False)(slow_the_first_time)
    return app


def client() -> redis.Redis:
    """The test run's Redis database (the broker's)."""
    return redis.Redis.from_url(os.environ["FLASK_EXECUTE_TEST_BROKER"])


def count(tag: str, what: str) -> int:
    """How often runs of ``tag`` have ``"started"`` or ``"finished"``."""
    return int(client().get(f"{tag}:{what}") or 0)


def slow(tag: str, seconds: float) -> str:
    """Count a start, sleep ``seconds``, count an end."""
    client().incr(f"{tag}:started")
    time.sleep(seconds)
    client().incr(f"{tag}:finished")
    return tag


def slow_the_first_time(tag: str) -> int:
    """Sleep a minute on the first run only (so that a stop cuts it off); return the
    number of this run."""
    run = int(client().incr(f"{tag}:started"))
    if run == 1:
        time.sleep(60)
    client().incr(f"{tag}:finished")
    return run
