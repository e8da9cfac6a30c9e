"""Default plugin ``beat``: one beat per broker, beside the local workers.

Owns ``CELERY_SCHEDULER`` (start beat with the local workers when the application has
a schedule: ``@celery.schedule`` or ``CELERYBEAT_SCHEDULE``) and the keys of the beat
lock. It makes :class:`flask_execute.beat.LockedScheduler` Celery's ``beat_scheduler``
and puts its state file in ``CELERY_LOG_DIR`` (``beat_schedule_filename``), so the
local beat, ``flask celery beat`` and ``celery -A flask_execute.celery beat`` all run
one beat per broker.

Blocked, no local beat starts and beat runs Celery's own scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask_execute.beat import (
    CELERY_DEFAULT_FILENAME,
    LOCK_KEY_SETTING,
    LOCK_TIMEOUT_SETTING,
    SCHEDULER,
    schedule_filename,
)
from flask_execute.config import require_seconds
from flask_execute.errors import ConfigurationError
from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState
from flask_execute.services import Service

if TYPE_CHECKING:
    from flask import Flask

KEYS: dict[str, Any] = {
    # Start beat with the local workers when the application has a schedule.
    "CELERY_SCHEDULER": True,
    # Seconds the beat lock lives unless its holder renews it: how long a second beat
    # waits to take over after the first dies without releasing it.
    "CELERY_BEAT_LOCK_TIMEOUT": 15.0,
    # Redis key of the beat lock; None: "flask_execute:beat-lock:<celery app main>".
    "CELERY_BEAT_LOCK_KEY": None,
}


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(config: Mapping[str, Any]) -> None:
    require_seconds(config, "CELERY_BEAT_LOCK_TIMEOUT")
    key = config["CELERY_BEAT_LOCK_KEY"]
    if key is not None and (not isinstance(key, str) or not key):
        raise ConfigurationError(
            f"CELERY_BEAT_LOCK_KEY must be a Redis key (a non-empty string) or None, not {key!r}"
        )


@hookimpl
def flask_execute_configure_celery(app: Flask, settings: dict[str, Any]) -> None:
    settings.setdefault("beat_scheduler", SCHEDULER)
    settings[LOCK_TIMEOUT_SETTING] = float(app.config["CELERY_BEAT_LOCK_TIMEOUT"])
    settings[LOCK_KEY_SETTING] = app.config["CELERY_BEAT_LOCK_KEY"]


@hookimpl
def flask_execute_init_app(app: Flask) -> None:
    # The file is named after the Celery app, which exists only now.
    state = AppState.of(app)
    conf = state.celery_app.conf
    if conf.beat_schedule_filename in (None, "", CELERY_DEFAULT_FILENAME):
        conf.beat_schedule_filename = schedule_filename(state)


@hookimpl
def flask_execute_describe_services(app: Flask) -> list[Service]:
    conf = AppState.of(app).celery_app.conf
    if not app.config["CELERY_SCHEDULER"] or not conf.beat_schedule:
        return []
    # The beat process loads the app: its scheduler and file come from the settings.
    return [Service("beat", "beat", ["beat"])]
