"""Default plugin ``tasks``: ``@celery.task`` functions are registered on the app.

Tasks declared on the extension before ``init_app`` (the factory pattern) are
registered when the application is; tasks declared later are registered at once.
Block this plugin to keep registered tasks off an application.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_execute.markers import hookimpl
from flask_execute.registry import TasksMixin

if TYPE_CHECKING:
    from flask import Flask

    from flask_execute.runtime import AppState


@hookimpl
def flask_execute_init_app(app: Flask, state: AppState) -> None:
    if isinstance(state.extension, TasksMixin):
        state.extension.task.bind(state)
