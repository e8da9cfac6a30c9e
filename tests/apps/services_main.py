"""Run as a process: submit once (starting the services), report, wait for stdin to close."""

from __future__ import annotations

import json
import os
import sys

from tests.apps.services_app import add, create_app

app = create_app()
celery = app.extensions["celery"]
print("RESULT", celery.submit(add, 1, 2).result(timeout=60), flush=True)
print("PROCESSES", json.dumps(celery.processes), os.getpid(), flush=True)
sys.stdin.read()
