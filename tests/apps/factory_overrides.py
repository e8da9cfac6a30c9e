"""A factory app, Flask-tutorial style: ``create_app(overrides)``.

Its own defaults name a broker nobody listens on and another secret key: a worker it
starts serves the overrides only if the app's effective config reaches it. A key is
also set after ``init_app`` (as blueprints or extensions often do), so that a test can
override it after the factory returned.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app

from flask_execute import Celery

celery = Celery()


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="factory-default-secret-key-32-bytes-long",
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",  # the default: nothing listens there
        CELERY_FLOWER=False,
        CELERY_START_TIMEOUT=30,
    )
    app.config.update(overrides or {})
    celery.init_app(app)
    app.config["GREETING"] = "default greeting"  # set after init_app
    return app


def read_key(name: str) -> Any:
    return current_app.config.get(name)


def pid() -> int:
    return os.getpid()
