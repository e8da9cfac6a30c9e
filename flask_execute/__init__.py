"""flask_execute: Celery for Flask that feels like ``concurrent.futures``.

::

    app = Flask(__name__)
    celery = Celery(app)
    future = celery.submit(add, 1, 2)
    future.result(timeout=5)  # 3

The public names are imported on first use (PEP 562), so that importing the package,
or its pytest plugin in every test session, does not pull in Flask and Celery.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Each public name, and the module it comes from.
_LAZY = {
    "BrokerUnavailable": "flask_execute.errors",
    "Celery": "flask_execute.extension",
    "ConfigurationError": "flask_execute.errors",
    "DependencyFailed": "flask_execute.errors",
    "ExecuteError": "flask_execute.errors",
    "Future": "flask_execute.futures",
    "FuturePool": "flask_execute.pool",
    "HardTimeLimitError": "flask_execute.errors",
    "PoolProgress": "flask_execute.progress",
    "Progress": "flask_execute.progress",
    "SerializationError": "flask_execute.errors",
    "ServiceError": "flask_execute.errors",
    "SignatureError": "flask_execute.errors",
    "SoftTimeLimitError": "flask_execute.errors",
    "StreamFuture": "flask_execute.stream_future",
    "TaskFailed": "flask_execute.errors",
    "TimeLimitError": "flask_execute.errors",
    "UnknownTaskError": "flask_execute.errors",
    "as_completed": "flask_execute.completion",
    "current_task": "flask_execute.context",
    "hookimpl": "flask_execute.markers",
}

#: The installed distribution's version, e.g. ``"0.2.0"``.
__version__: str = _version("flask-execute")

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
    "__version__",
    "as_completed",
    "current_task",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # found once: later lookups skip this function
        return value
    # `celery -A flask_execute.celery worker`: the Celery app of the Flask app that
    # FLASK_APP (or app.py in the working directory) names. Never cached: it is loaded.
    if name == "celery":
        from flask_execute.discovery import load_celery_app

        return load_celery_app()
    raise AttributeError(f"module 'flask_execute' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
