"""A direct-pattern app for worker tests; its broker comes from the test run."""

from __future__ import annotations

import os
import time

import redis
from celery.worker.control import control_command, inspect_command
from flask import Flask, current_app, g

from flask_execute import Celery, current_task
from tests.apps import worker_app_config

app = Flask(__name__)
app.config.update(worker_app_config("basic", "basic-app"))
# Tests of this app cancel sleeping tasks that never look at current_task.cancelled,
# and expect their worker processes back at once (tests/test_cancel.py has its own app).
app.config["CELERY_CANCEL_GRACE"] = 0
celery = Celery(app)

LOADS = []  # how many times this module was imported in this process


def add(x, y):
    return x + y


def app_name():
    return current_app.config["MARKER"], g.get("seen", None)


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def progress(steps):
    for i in range(steps):
        current_task.update_state(state="PROGRESS", meta={"step": i + 1})
        time.sleep(0.2)
    return current_task.id


def report_progress(steps, pace=0.15, **meta):
    """Report each of ``steps`` through ``current_task.progress``, paced slower than
    the default coalescing interval so that every report is written."""
    for i in range(1, steps + 1):
        time.sleep(pace)
        current_task.progress(i, steps, **meta)
    return steps


def report_tight(count):
    """Report progress on every step of a tight loop."""
    for i in range(1, count + 1):
        current_task.progress(i, count)
    return count


def report_until_released(key, steps):
    """Report ``steps`` of ``steps + 1``, then wait until ``key`` is pushed in Redis
    (the run's database) before the last report and the end."""
    for i in range(1, steps + 1):
        time.sleep(0.15)
        current_task.progress(i, steps + 1, stage="working")
    client = redis.Redis.from_url(current_app.config["CELERY_BROKER_URL"])
    released = client.blpop([key], timeout=60)
    current_task.progress(steps + 1, steps + 1, stage="done")
    return "released" if released else "timed out"


def wait_for_release(key, value=None):
    """Wait until ``key`` is pushed in Redis (the run's database), then return
    ``value``."""
    redis.Redis.from_url(current_app.config["CELERY_BROKER_URL"]).blpop([key], 60)
    return value


def count_up(n, key=None):
    """Yield 0 .. n - 1 (a stream); with ``key``, wait after the first item until it
    is pushed in Redis (the run's database)."""
    for i in range(n):
        yield i
        if key and i == 0:
            redis.Redis.from_url(current_app.config["CELERY_BROKER_URL"]).blpop([key], 60)
    return f"counted {n}"


def stream_then_fail(n):
    yield from range(n)
    raise ValueError("the stream broke")


def stream_retry():
    yield 1
    current_task.retry(countdown=0)


def bad_progress(done, total):
    current_task.progress(done, total)


def fail(message):
    raise ValueError(message)


def pid():
    return os.getpid(), os.getppid()


# A project's own remote commands (registered in the worker and here alike): Celery's
# clients have no method for them, so celery.inspect/control reach them by name.
@control_command(args=[("word", str), ("times", int)], signature="<word> [times]")
def echo_word(state, word, times=1):
    """Reply with ``word`` repeated ``times`` times."""
    return {"ok": word * times}


@inspect_command(variadic="names")
def count_names(state, names=()):
    """Reply with the number of names given."""
    return {"count": len(names)}


def import_count():
    return os.environ.get("FLASK_EXECUTE_TEST_IMPORTS")


os.environ["FLASK_EXECUTE_TEST_IMPORTS"] = str(
    int(os.environ.get("FLASK_EXECUTE_TEST_IMPORTS", "0")) + 1
)
