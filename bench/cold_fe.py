"""Cold start, flask_execute side: run as a fresh interpreter by ``cold_start.py``.

``Celery(app)`` then the first ``submit(add, 1, 2).result()``, which starts one local
worker by itself (``CELERY_WORKERS = 1``, no flower); then ``celery.status()`` with the
worker online. Prints one JSON line per measurement (times from the interpreter's start
of this module), then stops the worker. Its workers load this file as the app.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402

from flask import Flask  # noqa: E402

from flask_execute import Celery  # noqa: E402

app = Flask(__name__)
app.config.update(
    SECRET_KEY="bench-secret-key-of-32-bytes-or-more",
    CELERY_BROKER_URL=os.environ["FLASK_EXECUTE_BENCH_BROKER"],
    CELERY_WORKERS=1,
    CELERY_FLOWER=False,
    CELERY_START_TIMEOUT=60,
    CELERY_TASK_DEFAULT_QUEUE="cold_fe",
    CELERY_LOG_DIR=os.environ.get("FLASK_EXECUTE_BENCH_LOGS"),
)
celery = Celery(app)
INITIALISED = time.perf_counter()


def add(x: int, y: int) -> int:
    return x + y


def report(**values: object) -> None:
    print(json.dumps(values), flush=True)


def main() -> None:
    try:
        result = celery.submit(add, 1, 2).result(timeout=60)
        first = time.perf_counter()
        report(event="result", result=result, init=INITIALISED - STARTED, first=first - STARTED)
        samples = []
        for _ in range(20):
            start = time.perf_counter()
            status = celery.status()
            samples.append(time.perf_counter() - start)
            assert list(status.values()) == ["OK"], status
        report(event="status", median=statistics.median(samples), max=max(samples), nodes=status)
    finally:
        celery.stop()


if __name__ == "__main__":
    main()
