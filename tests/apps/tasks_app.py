"""A direct-pattern app with registered tasks, for worker tests of ``@celery.task``."""

from __future__ import annotations

import os

from flask import Flask, current_app

from flask_execute import Celery, current_task

app = Flask(__name__)
app.config.update(
    SECRET_KEY="test-secret",
    CELERY_BROKER_URL=os.environ.get("FLASK_EXECUTE_TEST_BROKER", "redis://127.0.0.1:6379/15"),
    CELERY_START_LOCAL_WORKERS=False,
    CELERY_FLOWER=False,
    CELERY_SCHEDULER=False,
    MARKER="tasks-app",
    # its own queue: this module's worker never takes other tests' messages
    CELERY_TASK_DEFAULT_QUEUE="tasks_app",
)
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
