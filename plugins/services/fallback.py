"""Zero-setup development: the broker when none is configured.

With no ``CELERY_BROKER_URL`` (nor ``BROKER_URL``) and local services managed by the
extension, Redis at ``localhost:6379`` is used when it answers; otherwise kombu's
``filesystem://`` transport and the ``file://`` result backend, under the app's
instance folder. Workers started by hand (``flask celery worker``) on the same machine
make the same choice; services we start are told ours through :data:`CHOICE_ENV`.
With ``CELERY_START_LOCAL_WORKERS = False`` there is never a fallback.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_execute")

#: Environment variable carrying the choice to the services we start.
CHOICE_ENV = "FLASK_EXECUTE_BROKER_CHOICE"

#: Seconds between polls of the filesystem broker and result folders.
FILESYSTEM_POLL = 0.01


def redis_answers(host: str = "localhost", port: int = 6379, timeout: float = 0.25) -> bool:
    """Whether something accepts connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_broker(app: Flask, settings: dict[str, Any]) -> str:
    """Fill in the filesystem broker (and result backend) when the config names no
    broker and nothing answers at ``localhost:6379`` (only for a managed development
    setup: the ``services`` plugin calls this when local services start themselves).

    :return: ``"configured"``, ``"redis"`` (left to the ``config`` plugin's default)
        or ``"filesystem"``.
    """
    if "broker_url" in settings:
        return "configured"
    choice = os.environ.get(CHOICE_ENV)
    if choice not in ("redis", "filesystem"):
        choice = "redis" if redis_answers() else "filesystem"
    if choice == "redis":
        return choice
    _use_filesystem(Path(app.instance_path) / "celery-broker", settings)
    logger.warning(
        "no CELERY_BROKER_URL is set and nothing answers at "
        "redis://localhost:6379: using a filesystem broker in %s (development only; "
        "start Redis or set CELERY_BROKER_URL for anything else)",
        Path(app.instance_path) / "celery-broker",
    )
    return choice


def _use_filesystem(root: Path, settings: dict[str, Any]) -> None:
    queue, control, results = root / "queue", root / "control", root / "results"
    for folder in (queue, control, results):
        folder.mkdir(parents=True, exist_ok=True)
    settings["broker_url"] = "filesystem://"
    options = dict(settings.get("broker_transport_options") or {})
    options.setdefault("data_folder_in", str(queue))
    options.setdefault("data_folder_out", str(queue))
    options.setdefault("control_folder", str(control))
    options.setdefault("polling_interval", FILESYSTEM_POLL)
    settings["broker_transport_options"] = options
    settings.setdefault("result_backend", f"file://{results}")
