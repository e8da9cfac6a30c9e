"""Default plugin ``scheduling``: ``@celery.schedule`` entries in beat's schedule.

Every declared schedule becomes a ``beat_schedule`` entry, merged after the config's
``CELERYBEAT_SCHEDULE``, so a beat process that loads the application finds them all
in ``celery_app.conf.beat_schedule``.

Blocked, ``@celery.schedule`` still registers its function as a task but adds no beat
entry; ``CELERYBEAT_SCHEDULE`` is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState
from flask_execute.schedules import make_schedule

if TYPE_CHECKING:
    from flask import Flask


@hookimpl(trylast=True)
def flask_execute_make_schedule(schedule: Any, crontab_kwargs: Mapping[str, Any]) -> Any:
    return make_schedule(schedule, crontab_kwargs)


@hookimpl
def flask_execute_add_beat_entries(app: Flask) -> Mapping[str, Any]:
    state = AppState.of(app)
    entries: Mapping[str, Any] = state.extension.schedule.entries(state)
    return entries


@hookimpl(trylast=True)
def flask_execute_init_app(app: Flask) -> None:
    # trylast: after the tasks plugin registered the scheduled functions.
    state = AppState.of(app)
    state.extension.schedule.bind(state)
