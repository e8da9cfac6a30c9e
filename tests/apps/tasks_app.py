"""A direct-pattern app with registered tasks, for worker tests of ``@celery.task``."""

from __future__ import annotations

from flask import Flask, current_app

from flask_execute import Celery, current_task
from tests.apps import worker_app_config

app = Flask(__name__)
app.config.update(worker_app_config("tasks_app", "tasks-app"))
celery = Celery(app)


class Unusual(Exception):
    """An exception type of the app's own, re-raised with its type on the caller's side."""


@celery.task
def add(x, y):
    return x + y


@celery.task(name="test")
def marker():
    return current_app.config["MARKER"]


@celery.task(bind=True, max_retries=3, default_retry_delay=0)
def flaky(self, succeed_on):
    if self.request.retries + 1 < succeed_on:
        raise self.retry(countdown=0)
    return self.request.retries


@celery.task(rate_limit="100/s", bind=True)
def whoami(self):
    return [self.name, self.rate_limit, current_task.id == self.request.id]


@celery.task
def fail(message):
    raise Unusual(message)


@celery.task
def progress(steps, release_key):
    import redis

    client = redis.Redis.from_url(current_app.config["CELERY_BROKER_URL"])
    for i in range(steps):
        current_task.update_state(state="PROGRESS", meta={"step": i + 1})
    # stay in PROGRESS until the test has seen it (bounded: the test's wait)
    client.blpop([release_key], timeout=20)
    return steps
