"""Flask apps the tests' real workers load."""

from __future__ import annotations

import os
from typing import Any


def worker_app_config(queue: str, marker: str) -> dict[str, Any]:
    """Config of a test app served by workers the tests start themselves: the run's
    broker, no local services, and a queue of its own, so its workers never take
    another test's messages."""
    return {
        "SECRET_KEY": "test-secret-key-of-32-bytes-or-more",
        "CELERY_BROKER_URL": os.environ.get(
            "FLASK_EXECUTE_TEST_BROKER", "redis://127.0.0.1:6379/15"
        ),
        "CELERY_START_LOCAL_WORKERS": False,
        "CELERY_FLOWER": False,
        "CELERY_SCHEDULER": False,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "MARKER": marker,
    }
