"""An app for broker and backend fault tests: its broker is a private ``redis-server``.

Workers load ``app`` with the private server's URL in ``FLASK_EXECUTE_TEST_BROKER``
(set by :func:`tests.helpers.start_worker`); the test builds its own side with
:func:`create_app`, so both talk to the same server and sign with the same key.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from flask import Flask

from flask_execute import Celery
from tests.apps import worker_app_config

#: The broker's visibility timeout in this app (seconds).
VISIBILITY_TIMEOUT = 5


def create_app(broker_url: str | None = None, **config: Any) -> tuple[Flask, Celery]:
    """A Flask app and its extension on ``broker_url`` (default: the run's broker)."""
    app = Flask(__name__)
    app.config.update(worker_app_config("faults", "faults-app"))
    # Seconds, not the default quarter hour: a killed worker's messages come back
    # within a test (the restore sweep's period comes from the plugin defaults).
    # FAULTS_DEFAULT_TRANSPORT=1 keeps the defaults instead.
    if os.environ.get("FAULTS_DEFAULT_TRANSPORT") != "1":
        app.config["CELERY_BROKER_TRANSPORT_OPTIONS"] = {
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "unacked_restore_interval": 1,
        }
    if broker_url is not None:
        app.config["CELERY_BROKER_URL"] = broker_url
    app.config.update(config)
    return app, Celery(app)


app, celery = create_app()


def add(x: int, y: int) -> int:
    return x + y


def signal_and_sleep(key: str, seconds: float) -> str:
    """Record in the broker's Redis that this call started, then sleep ``seconds``."""
    url = app.config["CELERY_BROKER_URL"]
    redis.Redis.from_url(url, socket_timeout=5).rpush(key, os.getpid())
    time.sleep(seconds)
    return key
