"""The task ids of the calls of a ``celery.map`` chunk: ``<chunk id>.<index>``."""

from __future__ import annotations


def call_id(chunk_id: str, index: int) -> str:
    """The task id of call ``index`` of chunk ``chunk_id``."""
    return f"{chunk_id}.{index}"


def split_call_id(task_id: str) -> tuple[str, int] | None:
    """``(chunk id, index)`` of a call's id, or ``None`` for any other id."""
    chunk_id, dot, index = task_id.rpartition(".")
    if not dot or not chunk_id or not index.isdigit():
        return None
    return chunk_id, int(index)
