"""A factory app for local-services tests; each test shapes it through SVC_* variables.

The services it starts load it again with the same environment, so they see the same
configuration: SVC_CONFIG (JSON of extra config keys), SVC_QUEUE, SVC_LOG_DIR.
"""

from __future__ import annotations

import json
import os

from flask import Flask

from flask_execute import Celery


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ.get("SVC_INSTANCE") or None)
    app.config.update(
        SECRET_KEY="services-secret-key-of-32-bytes-or-more",
        CELERY_BROKER_URL=os.environ["FLASK_EXECUTE_TEST_BROKER"],
        CELERY_TASK_DEFAULT_QUEUE=os.environ.get("SVC_QUEUE", "svc"),
        CELERY_FLOWER=False,
        CELERY_LOG_DIR=os.environ.get("SVC_LOG_DIR"),
        CELERY_START_TIMEOUT=30,
    )
    app.config.update(json.loads(os.environ.get("SVC_CONFIG", "{}")))
    for key in [k for k, v in app.config.items() if v == "__unset__"]:
        del app.config[key]
    Celery(app)

    @app.route("/")
    def index() -> dict[str, object]:
        celery = app.extensions["celery"]
        return {"result": celery.submit(add, 2, 3).result(timeout=30), "pid": os.getpid()}

    return app


def add(x: int, y: int) -> int:
    return x + y


def where() -> str:
    from flask_execute import current_task

    return str(current_task.request.hostname)
