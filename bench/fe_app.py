"""The flask_execute side of the benchmark: a Flask app and the function it submits.

Workers load it as ``FLASK_APP=fe_app:app`` (``celery -A flask_execute.celery worker``);
the benchmark imports it under the same name, so ``add`` travels by reference.
"""

from __future__ import annotations

import os

from flask import Flask

from flask_execute import Celery

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


def add(x: int, y: int) -> int:
    return x + y
