"""Default plugin ``tasks``: ``@celery.task`` functions are registered on the app.

Tasks declared on the extension before ``init_app`` (the factory pattern) are
registered when the application is; tasks declared later are registered at once.

Blocked, registered tasks stay off the application: calling ``add.delay()`` says the
``tasks`` plugin is disabled; submitting functions still works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState

if TYPE_CHECKING:
    from flask import Flask


@hookimpl
def flask_execute_init_app(app: Flask) -> None:
    state = AppState.of(app)
    state.extension.task.bind(state)
