"""The flask_execute side of ``bench/faults.py``: Flask apps on the benchmark's private
``redis-server`` and the functions they submit.

The benchmark sets the private server's URL in ``FLASK_EXECUTE_BENCH_BROKER`` and a log
folder in ``FAULTS_LOG_DIR`` before importing this module, and imports it under the same
name its workers do, so ``slow`` and ``add`` travel by reference. Three apps, one per
role, all signing with the same key:

- ``app``: served by workers the benchmark starts itself
  (``FLASK_APP=faults_fe:app celery -A flask_execute.celery worker``), on ``QUEUE``;
- ``stop_app``: one local worker of its own (``CELERY_WORKERS``), started by
  ``celery.start()`` and stopped by ``celery.stop()``; it loads ``faults_fe:stop_app``;
- ``stall_app``: ``CELERY_SUBMIT_TIMEOUT = 2``, for the stalled broker; no worker.
"""

from __future__ import annotations

import os
from typing import Any

from faults_work import add, slow  # noqa: F401 - the benchmark submits them from here
from flask import Flask

from flask_execute import Celery

BROKER = os.environ["FLASK_EXECUTE_BENCH_BROKER"]

#: Queues: the hand-started worker's, the local worker's, and two no worker serves.
QUEUE = "faults_fe"
STOP_QUEUE = "faults_fe_stop"
STALL_QUEUE = "faults_fe_stall"
HOLD_QUEUE = "faults_fe_hold"

#: The submit timeout of ``stall_app``.
STALL_SUBMIT_TIMEOUT = 2.0

#: The local worker of ``stop_app``: the same pool and concurrency as raw Celery's.
STOP_WORKER = "faultsfe"
STOP_CONCURRENCY = 2


def _create(queue: str, **config: Any) -> tuple[Flask, Celery]:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="bench-secret-key-of-32-bytes-or-more",
        CELERY_BROKER_URL=BROKER,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_FLOWER=False,
        CELERY_SCHEDULER=False,
        CELERY_LOG_DIR=os.environ.get("FAULTS_LOG_DIR"),
    )
    app.config.update(config)
    return app, Celery(app)


app, celery = _create(QUEUE)
stop_app, stop_celery = _create(
    STOP_QUEUE,
    CELERY_START_LOCAL_WORKERS=True,
    CELERY_WORKERS={STOP_WORKER: {"pool": "prefork", "concurrency": STOP_CONCURRENCY}},
)
stall_app, stall_celery = _create(STALL_QUEUE, CELERY_SUBMIT_TIMEOUT=STALL_SUBMIT_TIMEOUT)
