"""The raw Celery side of ``bench/faults.py``: a Celery app with Celery's defaults and
registered ``add`` and ``slow`` tasks, on the benchmark's private ``redis-server``.

Its workers run ``celery -A faults_raw worker``; broker and result backend are the URL
in ``FLASK_EXECUTE_BENCH_BROKER``, set by the benchmark before importing this module.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ["FLASK_EXECUTE_BENCH_BROKER"]

#: Queues: the worker's for the restart and the replay, the stop case's, and one no
#: worker serves.
QUEUE = "faults_raw"
STOP_QUEUE = "faults_raw_stop"
HOLD_QUEUE = "faults_raw_hold"

app = Celery("faults_raw", broker=BROKER, backend=BROKER, set_as_current=False)
# Only the queue, and the start-up retry Celery warns about when unset (as raw_app):
# every setting that matters to a fault is Celery's default.
app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=True)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def slow(seconds: float, key: str | None = None) -> float:
    """Sleep ``seconds`` and return them; with ``key``, record the start and the end in
    the broker's Redis (lists ``<key>:started`` and ``<key>:finished``)."""
    _mark(key, "started")
    time.sleep(seconds)
    _mark(key, "finished")
    return seconds


def _mark(key: str | None, what: str) -> None:
    if key is None:
        return
    try:  # a record lost while Redis is down must not fail the task
        with redis.Redis.from_url(BROKER, socket_timeout=2, socket_connect_timeout=2) as client:
            client.rpush(f"{key}:{what}", os.getpid())
    except redis.RedisError:
        pass
