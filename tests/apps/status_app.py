"""An app that serves the status endpoint; the basic app's worker runs its tasks (same
broker, queue and signing key), so its Futures, tokens and blueprints are its own."""

from __future__ import annotations

from flask import Flask

from flask_execute import Celery
from tests.apps import worker_app_config

app = Flask(__name__)
app.config.update(worker_app_config("basic", "status-app"))
app.config.update(CELERY_STATUS_HEARTBEAT=0.5, CELERY_CANCEL_GRACE=0)
celery = Celery(app)
app.register_blueprint(celery.blueprint(), url_prefix="/tasks")

#: Ids the guarded blueprint lets through (its ``authorize`` check).
ALLOWED: set[str] = set()


def allowed(target) -> bool:
    return target.id in ALLOWED


app.register_blueprint(celery.blueprint("guarded", authorize=allowed), url_prefix="/guarded")
