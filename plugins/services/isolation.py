"""Development isolation: a self-started setup's messages are this app's own.

On a Redis that several projects share (the development default is database 0 of
localhost), every app would use Celery's default queue and exchanges, all named
``celery``: another project's worker would take this app's tasks (and fail them: it
does not hold the signing key) and ``status()`` would list its workers. So a managed
development setup (``CELERY_START_LOCAL_WORKERS``) gets names of its own, made of the
app's name and a digest of its folder, the same in every process that loads this app
here: its local workers, a ``flask celery worker`` started by hand beside it, flower,
beat. Any of the settings the user gave wins, and a project that routes its own queues
keeps Celery's default queue. Production sets them (or keeps Celery's defaults) itself.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

#: Settings that say the project routes its queues itself.
_ROUTING = ("task_default_queue", "task_queues", "task_routes")


def own_name(app: Flask) -> str:
    """``flask_execute.<app name>.<digest of its root folder>``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", app.name).strip("-") or "app"
    digest = hashlib.sha256(app.root_path.encode()).hexdigest()[:8]
    return f"flask_execute.{slug}.{digest}"


def isolate(app: Flask, settings: dict[str, Any]) -> None:
    """Default the queue, the control exchange and the event exchange to this app's own
    names (see the module docstring)."""
    name = own_name(app)
    if not any(settings.get(key) for key in _ROUTING):
        settings["task_default_queue"] = name
    settings.setdefault("control_exchange", name)
    settings.setdefault("event_exchange", f"{name}.events")
