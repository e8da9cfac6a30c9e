"""Default plugin ``futures``: the Future and FuturePool types handed to users.

Blocked, ``init_app`` fails naming the hooks left without an answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_execute.futures import Future
from flask_execute.markers import hookimpl
from flask_execute.pool import FuturePool
from flask_execute.runtime import AppState

if TYPE_CHECKING:
    from flask import Flask


@hookimpl(trylast=True)
def flask_execute_make_future(app: Flask, task_id: str, name: str | None) -> Future:
    return Future(task_id, AppState.of(app).futures, name)


@hookimpl(trylast=True)
def flask_execute_make_pool(futures: list[Future]) -> FuturePool:
    return FuturePool(futures)
