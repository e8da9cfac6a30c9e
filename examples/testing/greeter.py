"""A factory app, as Flask's tutorial writes one: ``create_app(test_config=None)``.

Its tests (``test_greeter.py`` beside it) build it with their own config and run its
tasks eagerly or on a real worker, with the fixtures of flask_execute's pytest plugin.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app

from flask_execute import Celery

celery = Celery()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY="change-me: signs the functions sent to the workers",
        CELERY_FLOWER=False,
        GREETING="Hello",
    )
    if test_config is None:
        app.config.from_prefixed_env()  # FLASK_CELERY_BROKER_URL=... and so on
    else:
        app.config.from_mapping(test_config)
    celery.init_app(app)

    @app.get("/greet/<name>")
    def greet_view(name: str) -> dict[str, str]:
        return {"greeting": celery.submit(greet, name).result(timeout=10)}

    return app


def greet(name: str) -> str:
    return f"{current_app.config['GREETING']}, {name}!"


def worker_pid() -> int:
    return os.getpid()
