"""The status blueprint: a task's or a pool's state as JSON, as server-sent events,
a cancel endpoint, and the JavaScript that watches them from a browser.

Every view opens its token first: a token that is forged, expired, made by another
application, or that names an unknown task, gets the same bare 404 as a missing page,
and so does one the application's own ``authorize`` check refuses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from importlib.resources import files
from typing import Any

from celery.result import GroupResult
from flask import Blueprint, Response, abort, current_app

from flask_execute.errors import UnknownTaskError
from flask_execute.futures import Future
from flask_execute.pool import FuturePool
from flask_execute.runtime import AppState

from .report import item_events, pool_report, task_report

#: What ``authorize`` receives: the Future or the FuturePool a token names.
Target = Future | FuturePool

#: The JavaScript helper, read once.
SCRIPT = files(__package__).joinpath("watch.js").read_text(encoding="utf-8")


class Watched:
    """What a token names, opened: its Futures and how to report on them.

    :param results: whether results (and a stream's items) may be shown.
    """

    def __init__(
        self, target: Target, report: Callable[[], dict[str, Any]], results: bool = False
    ) -> None:
        self.target = target
        self.report = report
        self.results = results

    @property
    def futures(self) -> list[Future]:
        return list(self.target) if isinstance(self.target, FuturePool) else [self.target]


def build_blueprint(name: str, authorize: Callable[[Target], bool] | None) -> Blueprint:
    """The status blueprint (see the module docstring); register it with the prefix of
    your choice: ``app.register_blueprint(celery.blueprint(), url_prefix="/tasks")``."""
    blueprint = Blueprint(name, __name__)

    def open_token(token: str) -> Watched:
        state = AppState.of(current_app)
        config = current_app.config
        opened = state.status_tokens.open(token, config["CELERY_STATUS_MAX_AGE"])
        if opened is None:
            abort(404)
        kind, value = opened
        if kind == "task":
            watched = _task(state, value, results=config["CELERY_STATUS_RESULTS"])
        else:
            watched = _pool(state, value)
        if watched is None or (authorize is not None and not authorize(watched.target)):
            abort(404)
        return watched

    @blueprint.get("/<token>")
    def status(token: str) -> Response:
        return _json(open_token(token).report())

    @blueprint.post("/<token>/cancel")
    def cancel(token: str) -> Response:
        watched = open_token(token)
        watched.target.cancel()
        return _json(watched.report())

    @blueprint.get("/<token>/events")
    def events(token: str) -> Response:
        watched = open_token(token)
        heartbeat = float(current_app.config["CELERY_STATUS_HEARTBEAT"])
        return Response(
            stream(watched, heartbeat),
            mimetype="text/event-stream",
            # No caching, and no buffering by a proxy (nginx honours this header).
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @blueprint.get("/watch.js")
    def script() -> Response:
        response = Response(SCRIPT, mimetype="text/javascript")
        response.cache_control.public = True
        response.cache_control.max_age = 3600
        return response

    return blueprint


def _task(state: AppState, task_id: str, *, results: bool) -> Watched | None:
    try:
        future = state.futures.get(task_id)
    except UnknownTaskError:
        return None
    return Watched(future, lambda: task_report(future, results=results), results)


def _pool(state: AppState, group_id: str) -> Watched | None:
    group = GroupResult.restore(group_id, app=state.celery_app)
    if group is None:
        return None
    try:
        futures = [state.futures.get(str(result.id)) for result in group.results]
    except UnknownTaskError:
        return None
    pool = state.pool(futures)
    return Watched(pool, lambda: pool_report(pool, group_id))


def stream(watched: Watched, heartbeat: float) -> Iterator[str]:
    """Server-sent events: the report now, one ``progress`` event per change, an
    ``item`` event per item a streamed call yields, a final ``done`` event, then the
    end; a comment every ``heartbeat`` seconds while nothing changes (it keeps proxies
    from closing the connection, and a disconnected client is noticed at the next
    write). Unsubscribed however it ends."""
    changed = threading.Event()
    unsubscribe = [future.subscribe(changed.set) for future in watched.futures]
    cursor = (0, 0)
    try:
        last: dict[str, Any] | None = None
        while True:
            changed.clear()  # before reading: a change from now on wakes the wait below
            report = watched.report()  # before the items: a done report follows them all
            if isinstance(watched.target, Future):
                items, cursor = item_events(watched.target, cursor, watched.results)
                for item in items:
                    yield _event("item", item)
            if report != last:
                last = report
                yield _event("done" if report["done"] else "progress", report)
                if report["done"]:
                    return
            if not changed.wait(heartbeat):
                yield ": heartbeat\n\n"
    finally:
        for stop in unsubscribe:
            stop()


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _json(report: dict[str, Any]) -> Response:
    response = Response(json.dumps(report), mimetype="application/json")
    response.cache_control.no_store = True
    return response
