"""flask_execute: Celery for Flask that feels like ``concurrent.futures``.

::

    app = Flask(__name__)
    celery = Celery(app)
    future = celery.submit(add, 1, 2)
    future.result(timeout=5)  # 3
"""

from __future__ import annotations

from typing import Any

from flask_execute.completion import as_completed
from flask_execute.context import current_task
from flask_execute.errors import (
    BrokerUnavailable,
    ConfigurationError,
    DependencyFailed,
    ExecuteError,
    HardTimeLimitError,
    SerializationError,
    ServiceError,
    SignatureError,
    SoftTimeLimitError,
    TaskFailed,
    TimeLimitError,
    UnknownTaskError,
)
from flask_execute.extension import Celery
from flask_execute.futures import Future
from flask_execute.markers import hookimpl
from flask_execute.pool import FuturePool
from flask_execute.progress import PoolProgress, Progress
from flask_execute.stream_future import StreamFuture

__all__ = [
    "BrokerUnavailable",
    "Celery",
    "ConfigurationError",
    "DependencyFailed",
    "ExecuteError",
    "Future",
    "FuturePool",
    "HardTimeLimitError",
    "PoolProgress",
    "Progress",
    "SerializationError",
    "ServiceError",
    "SignatureError",
    "SoftTimeLimitError",
    "StreamFuture",
    "TaskFailed",
    "TimeLimitError",
    "UnknownTaskError",
    "as_completed",
    "current_task",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    # `celery -A flask_execute.celery worker`: the Celery app of the Flask app that
    # FLASK_APP (or app.py in the working directory) names.
    if name == "celery":
        from flask_execute.discovery import load_celery_app

        return load_celery_app()
    raise AttributeError(f"module 'flask_execute' has no attribute {name!r}")
