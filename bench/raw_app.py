"""The raw Celery side of the benchmark: a Celery app with a registered ``add`` task.

Its worker runs ``celery -A raw_app worker``; broker and result backend are the same
Redis database as the flask_execute side, with JSON serializers (Celery's defaults).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

#: The queue of this side; the flask_execute side has its own.
QUEUE = "bench_raw"

BROKER = os.environ.get("FLASK_EXECUTE_BENCH_BROKER", "redis://127.0.0.1:6379/15")

app = Celery("raw_app", broker=BROKER, backend=BROKER, set_as_current=False)
# task_track_started: flask_execute turns it on by default (a running call reads
# STARTED), which costs one backend write per call; the same setting on both sides.
app.conf.update(
    task_default_queue=QUEUE, broker_connection_retry_on_startup=True, task_track_started=True
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
def report_loop(self: Any, n: int) -> int:
    """Report progress on every step, as raw Celery does it: one write each."""
    for i in range(1, n + 1):
        self.update_state(state="PROGRESS", meta={"done": i, "total": n})
    return n
