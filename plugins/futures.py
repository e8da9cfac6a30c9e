"""Default plugin ``futures``: the Future and FuturePool types handed to users."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_execute.futures import Future, FuturePool
from flask_execute.markers import hookimpl

if TYPE_CHECKING:
    from flask_execute.runtime import AppState


@hookimpl(trylast=True)
def flask_execute_make_future(state: AppState, task_id: str, name: str | None) -> Future:
    return Future(task_id, state, name)


@hookimpl(trylast=True)
def flask_execute_make_pool(state: AppState, futures: list[Future]) -> FuturePool:
    return FuturePool(futures)
