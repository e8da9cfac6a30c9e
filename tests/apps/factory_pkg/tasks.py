"""Tasks declared on the extension before ``init_app``."""

from __future__ import annotations

from flask import current_app

from tests.apps.factory_pkg.extensions import celery


@celery.task
def add(x, y):
    return x + y


@celery.task(name="factory.marker")
def marker():
    return current_app.config["MARKER"]


@celery.schedule(hour=3, minute=15, name="factory-nightly")
def nightly():
    return "night"
