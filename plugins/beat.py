"""Default plugin ``beat``: the beat scheduler beside the local workers.

Started with the other services when ``CELERY_SCHEDULER`` is on and the application
has a schedule (``@celery.schedule`` or ``CELERYBEAT_SCHEDULE``). Beat runs
:class:`flask_execute.beat.LockedScheduler`, so however many processes start one, a
single beat per broker sends the entries; its state file lives in ``CELERY_LOG_DIR``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask_execute.beat import SCHEDULER, schedule_filename
from flask_execute.markers import hookimpl
from flask_execute.services import Service

if TYPE_CHECKING:
    from flask_execute.runtime import AppState

KEYS: dict[str, Any] = {
    # Start beat with the local workers when the application has a schedule.
    "CELERY_SCHEDULER": True,
}


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_local_services(state: AppState) -> list[Service]:
    if not state.app.config["CELERY_SCHEDULER"] or not state.celery_app.conf.beat_schedule:
        return []
    argv = [
        "beat",
        f"--schedule={schedule_filename(state)}",
        f"--scheduler={SCHEDULER}",
        f"--loglevel={state.app.config['CELERY_LOG_LEVEL']}",
    ]
    return [Service("beat", "beat", argv)]
