"""An app for ``flask celery cluster``: one named worker on its own queue, logs in a tmp dir."""

from __future__ import annotations

import os

from flask import Flask

from flask_execute import Celery

app = Flask(__name__)
app.config.update(
    SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    CELERY_BROKER_URL=os.environ.get("FLASK_EXECUTE_TEST_BROKER", "redis://127.0.0.1:6379/15"),
    CELERY_START_LOCAL_WORKERS=False,
    CELERY_WORKERS={"clicluster": {"queues": ["cli-cluster"], "concurrency": 1}},
    CELERY_FLOWER=False,
    CELERY_SCHEDULER=False,
    CELERY_LOG_DIR=os.environ.get("CLI_TEST_LOG_DIR", "/tmp/flask_execute_cli_cluster"),
    CELERY_TASK_DEFAULT_QUEUE="cli-cluster",
)
celery = Celery(app)
