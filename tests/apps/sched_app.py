"""A direct-pattern app with schedules, for real beat processes.

Each test gives it its own queue, lock key and lock timeout through the environment, so
the messages beat publishes can be counted per test and no lock outlives its test.
"""

from __future__ import annotations

import os

from celery.schedules import crontab
from flask import Flask

from flask_execute import Celery

env = os.environ.get
app = Flask(__name__)
app.config.update(
    SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    CELERY_BROKER_URL=env("FLASK_EXECUTE_TEST_BROKER", "redis://127.0.0.1:6379/15"),
    CELERY_START_LOCAL_WORKERS=False,
    CELERY_FLOWER=False,
    CELERY_SCHEDULER=False,
    CELERY_TASK_DEFAULT_QUEUE=env("SCHED_APP_QUEUE", "sched_app"),
    CELERY_BEAT_LOCK_KEY=env("SCHED_APP_LOCK_KEY"),
    CELERY_BEAT_LOCK_TIMEOUT=float(env("SCHED_APP_LOCK_TIMEOUT", "3")),
    CELERY_LOG_DIR=env("SCHED_APP_LOG_DIR"),
    CELERYBEAT_SCHEDULE={
        "from-config": {"task": "tests.apps.sched_app.every_second", "schedule": 3600.0},
    },
)
celery = Celery(app)


@celery.schedule(float(env("SCHED_APP_EVERY", "1")), args=("tick",), name="every-second")
def every_second(label):
    return label


@celery.schedule(hour=7, minute=30, day_of_week=1, name="monday-morning")
def monday_morning():
    return "monday"


@celery.schedule(crontab(minute="*/15"), kwargs={"where": "x"}, options={"expires": 60})
def quarterly(where):
    return where
