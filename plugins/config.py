"""Default plugin ``config``: Celery's defaults for a Flask application.

Without ``CELERY_BROKER_URL`` the broker is Redis on localhost (the ``services``
plugin may have chosen the filesystem fallback first); a Redis broker is also the
result backend unless ``CELERY_RESULT_BACKEND`` says otherwise.

Blocked, nothing is defaulted: configure ``CELERY_BROKER_URL`` and
``CELERY_RESULT_BACKEND`` yourself (``init_app`` says so when the backend is missing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask_execute.markers import hookimpl

if TYPE_CHECKING:
    from flask import Flask

#: The broker when the config names none.
DEFAULT_BROKER_URL = "redis://localhost:6379/0"


@hookimpl(trylast=True)
def flask_execute_configure_celery(app: Flask, settings: dict[str, Any]) -> None:
    broker = str(settings.setdefault("broker_url", DEFAULT_BROKER_URL))
    if broker.startswith(("redis://", "rediss://", "unix://")):
        settings.setdefault("result_backend", broker)
    settings.setdefault("broker_connection_retry_on_startup", True)
    settings.setdefault("redis_backend_health_check_interval", 30)
