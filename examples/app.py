"""A small Flask app that runs work on Celery workers it starts itself.

Run it with ``bash examples/run.sh`` (or ``python app.py`` from this folder, with
flask_execute installed). The first ``submit()`` starts two local workers (Redis at
localhost:6379 if it answers, else a filesystem broker under ``instance/``); the app
submits work, prints the results and stops its workers.

Set ``CELERY_BROKER_URL`` (and ``CELERY_LOG_DIR``) in the environment to use another
broker or log folder; the workers read the same variables when they load this file.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from flask import Flask, current_app

from flask_execute import Celery, Future, current_task

app = Flask(__name__)
app.config.update(
    SECRET_KEY="change-me: signs the functions sent to the workers",
    CELERY_WORKERS=2,  # two local workers, started on the first submit()
    CELERY_FLOWER=False,  # no monitoring web app for this example
    CELERY_START_TIMEOUT=60,  # generous: the machine may be busy
    GREETING="hello from the Flask app",
)
for key in ("CELERY_BROKER_URL", "CELERY_LOG_DIR"):
    if os.environ.get(key):
        app.config[key] = os.environ[key]
celery = Celery(app)


def add(x: int, y: int) -> int:
    return x + y


def greeting(name: str) -> str:
    # Tasks run inside the application context: current_app is this app.
    return f"{current_app.config['GREETING']}, {name} (worker pid {os.getpid()})"


def divide(x: float, y: float) -> float:
    return x / y


def count_to(steps: int) -> int:
    """Report progress after each step through ``current_task``."""
    for step in range(1, steps + 1):
        time.sleep(0.1)  # some work
        current_task.update_state(state="PROGRESS", meta={"step": step, "of": steps})
    return steps


def main() -> None:
    print(f"broker: {celery.celery_app.conf.broker_url}")
    try:
        # submit: any function, a real concurrent.futures.Future back
        future = celery.submit(add, 1, 2)
        print(f"submit: add(1, 2) = {future.result(timeout=30)}")
        print(f"workers: {sorted(celery.status())}")

        print(f"context: {celery.submit(greeting, 'example').result(timeout=30)}")

        # map: one call per argument list, constant keyword arguments for all of them
        pool = celery.map(add, [1], [2], [3], y=10)
        print(f"map: add(x, y=10) for x in 1, 2, 3 = {pool.result(timeout=30)}")

        # lambdas and closures travel too
        offset = 100
        square = celery.submit(lambda x: x * x + offset, 7)
        print(f"lambda: 7 * 7 + {offset} = {square.result(timeout=30)}")

        # a task's exception is re-raised here, with its own type
        try:
            celery.submit(divide, 1, 0).result(timeout=30)
        except ZeroDivisionError as exc:
            print(f"failure: divide(1, 0) raised ZeroDivisionError({exc})")

        # progress: the task's state updates reach the Future's progress callbacks
        lock = threading.Lock()

        def on_progress(f: Future) -> None:
            info: dict[str, Any] = f.info
            with lock:
                print(f"progress: {f.state} step {info['step']} of {info['of']}")

        counting = celery.submit(count_to, 5)
        counting.add_progress_callback(on_progress)
        done = threading.Event()
        counting.add_done_callback(lambda: done.set())
        steps = counting.result(timeout=30)
        done.wait(10)  # the callbacks run on their own thread: let them finish printing
        print(f"progress: finished after {steps} steps")
    finally:
        celery.stop()
        print("stopped: local workers")


if __name__ == "__main__":
    main()
