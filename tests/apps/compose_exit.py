"""A web process that submits a chain of calls and exits at once, before any input
ends: what waits must still run (tests/test_compose.py)."""

from __future__ import annotations

import os

from tests.apps.basic import add, app, celery, sleep

with app.app_context():
    first = celery.submit(sleep, 1.0)
    second = celery.submit(add, first, 1)
    third = celery.submit(add, second, 1)
    print("IDS", first.id, second.id, third.id, flush=True)
os._exit(0)  # no clean-up of any kind: as a killed web process
