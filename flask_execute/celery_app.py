"""The Celery application class of a Flask app, and the name it is created under."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import celery

if TYPE_CHECKING:
    from flask import Flask


class CeleryApp(celery.Celery):  # type: ignore[misc]
    """Celery application of one Flask app.

    Its result backend does not subscribe to each task it publishes (Celery's Redis
    backend does, for ``AsyncResult.get``): the application's one result listener feeds
    every Future, and ``AsyncResult.get`` still subscribes on demand.
    """

    def _get_backend(self) -> Any:
        backend = super()._get_backend()
        backend.on_task_call = _no_subscription
        return backend


def _no_subscription(producer: Any, task_id: str) -> None:
    return None


def main_name(app: Flask) -> str:
    # Task names of a script run as `python app.py` must match the worker's, which
    # imports the same file as a module named after it.
    if app.import_name == "__main__":
        file = getattr(sys.modules["__main__"], "__file__", None)
        if file:
            return str(os.path.splitext(os.path.basename(file))[0])
    return str(app.import_name)
