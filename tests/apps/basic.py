"""A direct-pattern app for worker tests; its broker comes from the test run."""

from __future__ import annotations

import os
import time

from celery.worker.control import control_command, inspect_command
from flask import Flask, current_app, g

from flask_execute import Celery, current_task
from tests.apps import worker_app_config

app = Flask(__name__)
app.config.update(worker_app_config("basic", "basic-app"))
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
