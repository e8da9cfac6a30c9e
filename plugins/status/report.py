"""The JSON the status endpoint serves for a task or a pool."""

from __future__ import annotations

import json
from typing import Any

from celery import states

from flask_execute.futures import Future
from flask_execute.pool import FuturePool
from flask_execute.stream_future import StreamFuture

#: Celery states that mean a call is running rather than waiting (custom states count
#: as running too: only a running task sets them).
_WAITING = frozenset((states.PENDING, states.RECEIVED))


def task_report(future: Future, *, results: bool) -> dict[str, Any]:
    """``{"id", "state", "done", "progress", "result", "error"}`` for one task.

    :param results: whether a successful task's result is included; a result that is
        not JSON-serializable is replaced by ``null`` and named in ``result_type``.
    """
    progress = future.progress
    report: dict[str, Any] = {
        "id": future.id,
        "state": future.state,
        "done": future.done(),
        "progress": progress.as_dict() if progress is not None else None,
        "result": None,
        "error": None,
    }
    if not future.done() or future.cancelled():
        return report
    error = future.exception(0)
    if error is not None:
        report["error"] = {"type": type(error).__name__, "message": str(error)}
    elif results:
        report.update(as_json(future.result(0), "result"))
    return report


def as_json(value: Any, key: str) -> dict[str, Any]:
    """``{key: value}`` if ``value`` is JSON-serializable, else ``{key: None,
    key + "_type": "<module>.<type>"}``: never more than its type's name."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return {key: None, f"{key}_type": f"{type(value).__module__}.{type(value).__qualname__}"}
    return {key: value}


def item_events(
    future: Future, cursor: tuple[int, int], results: bool
) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """The items a streamed call yielded since ``cursor`` (``(batch, index)``), as
    ``{"index", "item"}`` event data, and the cursor after them; none for another
    Future, or with results turned off."""
    if not results or not isinstance(future, StreamFuture):
        return [], cursor
    batch, index = cursor
    items, batch = future.items_from(batch)
    events = [{"index": index + i, **as_json(item, "item")} for i, item in enumerate(items)]
    return events, (batch, index + len(items))


def pool_report(pool: FuturePool, group_id: str) -> dict[str, Any]:
    """``{"id", "state", "done", "counts", "progress"}`` for a pool: how many calls are
    pending, running, succeeded, failed and cancelled, and the pool's progress."""
    counts = dict.fromkeys(("pending", "running", "succeeded", "failed", "cancelled"), 0)
    for future in pool:
        if future.cancelled():
            counts["cancelled"] += 1
        elif future.done():
            counts["failed" if future.exception(0) is not None else "succeeded"] += 1
        else:
            counts["pending" if future.state in _WAITING else "running"] += 1
    return {
        "id": group_id,
        "state": pool.state,
        "done": pool.done(),
        "counts": counts,
        "progress": pool.progress.as_dict(),
    }
