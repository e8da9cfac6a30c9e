"""Default plugin ``scheduling``: ``@celery.schedule`` entries in beat's schedule.

Every declared schedule becomes a ``beat_schedule`` entry, merged after the config's
``CELERYBEAT_SCHEDULE``, so a beat process that loads the application finds them all
in ``celery_app.conf.beat_schedule``. Also declares the keys of the beat lock
(:class:`flask_execute.beat.LockedScheduler`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask_execute.config import require_seconds
from flask_execute.errors import ConfigurationError
from flask_execute.markers import hookimpl
from flask_execute.registry import TasksMixin
from flask_execute.schedules import make_schedule

if TYPE_CHECKING:
    from flask import Flask

    from flask_execute.runtime import AppState

KEYS: dict[str, Any] = {
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
def flask_execute_validate_config(app: Flask, config: Mapping[str, Any]) -> None:
    require_seconds(config, "CELERY_BEAT_LOCK_TIMEOUT")
    key = config["CELERY_BEAT_LOCK_KEY"]
    if key is not None and (not isinstance(key, str) or not key):
        raise ConfigurationError(
            f"CELERY_BEAT_LOCK_KEY must be a Redis key (a non-empty string) or None, not {key!r}"
        )


@hookimpl(trylast=True)
def flask_execute_make_schedule(
    app: Flask, schedule: Any, crontab_kwargs: Mapping[str, Any]
) -> Any:
    return make_schedule(schedule, crontab_kwargs)


@hookimpl
def flask_execute_beat_schedule(state: AppState) -> Mapping[str, Any]:
    if not isinstance(state.extension, TasksMixin):
        return {}
    return state.extension.schedule.entries(state)


@hookimpl(trylast=True)
def flask_execute_init_app(app: Flask, state: AppState) -> None:
    # trylast: after the tasks plugin registered the scheduled functions.
    if isinstance(state.extension, TasksMixin):
        state.extension.schedule.bind(state)
