"""The extension object, created without an app (``Celery()``)."""

from __future__ import annotations

from flask_execute import Celery

celery = Celery()
