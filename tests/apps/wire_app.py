"""An app with a tiny token age and payload cap, for the wire's fault tests.

``CELERY_TOKEN_MAX_AGE`` is 3 seconds, so a captured message goes stale within a test;
``CELERY_MAX_PAYLOAD`` is 1 MiB, so an oversized result is cheap to make.
"""

from __future__ import annotations

import os
import time

from flask import Flask

from flask_execute import Celery, current_task
from tests.apps import worker_app_config

MAX_AGE = 3
MAX_PAYLOAD = 2**20

app = Flask(__name__)
app.config.update(
    worker_app_config("wire", "wire-app"),
    CELERY_TOKEN_MAX_AGE=MAX_AGE,
    CELERY_MAX_PAYLOAD=MAX_PAYLOAD,
)
celery = Celery(app)


class Tripwire:
    """Unpickling this creates a file: proof that a payload was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def touch(path: str, *ignored: object) -> str:
    """Create ``path``: proof that the function ran."""
    with open(path, "w"):
        pass
    return path


def add(x: int, y: int) -> int:
    return x + y


def now() -> float:
    return time.time()


def big(size: int) -> bytes:
    return b"x" * size


def retry_once(marker: str, countdown: float) -> int:
    """Retry once, ``countdown`` seconds later; return the number of retries."""
    if not os.path.exists(marker):
        touch(marker)
        raise current_task.retry(countdown=countdown)
    return int(current_task.request.retries)
