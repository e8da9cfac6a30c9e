"""Run as a process (the Flask side of a lifeline test): start the services with two
slow tasks, report once both run, then wait for stdin to close (or to be killed)."""

from __future__ import annotations

import json
import sys
import uuid

from tests import helpers
from tests.apps.stops_app import count, create_app, slow

app = create_app()
celery = app.extensions["celery"]
tags = [f"life-{uuid.uuid4().hex[:8]}" for _ in range(2)]
futures = [celery.submit(slow, tag, 3.0) for tag in tags]
helpers.wait_for(lambda: all(count(tag, "started") for tag in tags), timeout=60)
report = {"tags": tags, "ids": [f.task_id for f in futures], "processes": celery.processes}
print("RUNNING", json.dumps(report), flush=True)
sys.stdin.read()
