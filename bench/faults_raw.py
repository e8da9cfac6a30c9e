"""The raw Celery side of ``bench/faults.py``: a Celery app with Celery's defaults and
registered ``add`` and ``slow`` tasks, on the benchmark's private ``redis-server``.

Its workers run ``celery -A faults_raw worker``; broker and result backend are the URL
in ``FLASK_EXECUTE_BENCH_BROKER``, set by the benchmark before importing this module.
"""

from __future__ import annotations

import os

import faults_work
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


add = app.task(name="faults_raw.add")(faults_work.add)
slow = app.task(name="faults_raw.slow")(faults_work.slow)
