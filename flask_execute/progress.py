"""Progress: what a running call reports, and how often it is written.

Inside a task, ``current_task.progress(done, total=None, **meta)`` reports how far the
call got. A report is stored as Celery's custom state ``PROGRESS`` with a flat meta
(``{"done": 3, "total": 10, **meta}``), so Flower, ``AsyncResult.info`` and
``update_state(state="PROGRESS", meta={"done": 3})`` written by hand all speak the same
format, and the submitting side reads it back as a :class:`Progress`.

Reports are coalesced by :class:`ProgressReporter`: a loop that reports 100,000 times
writes to the backend about once per ``CELERY_PROGRESS_INTERVAL``, and the last report
is always written before the task's outcome.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

#: The Celery state a progress report is stored under.
PROGRESS = "PROGRESS"

Number = int | float


@dataclass(frozen=True)
class Progress:
    """One progress report of a call: ``future.progress``.

    :param done: how much is done (any unit: items, bytes ...).
    :param total: how much there is to do, or ``None`` when unknown.
    :param meta: what else the call reported (``current_task.progress(3, 10,
        file="a.csv")`` gives ``{"file": "a.csv"}``).
    """

    done: Number
    total: Number | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        """``done / total`` between 0 and 1, or ``None`` without a total."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def as_dict(self) -> dict[str, Any]:
        """``{"done", "total", "fraction", "meta"}``, JSON-ready."""
        return {
            "done": self.done,
            "total": self.total,
            "fraction": self.fraction,
            "meta": self.meta,
        }

    @classmethod
    def from_info(cls, info: Any) -> Progress | None:
        """The report in a ``PROGRESS`` state's meta, or ``None`` if it holds none (a
        meta without a numeric ``done``)."""
        if not isinstance(info, Mapping):
            return None
        done, total = info.get("done"), info.get("total")
        if not _is_number(done) or (total is not None and not _is_number(total)):
            return None
        meta = {key: value for key, value in info.items() if key not in ("done", "total")}
        return cls(done, total, meta)


@dataclass(frozen=True)
class PoolProgress:
    """The progress of a :class:`~flask_execute.FuturePool`: ``pool.progress``.

    :param done: calls finished (succeeded, failed or cancelled).
    :param total: calls in the pool.
    :param fraction: between 0 and 1: a finished call counts 1, a running call the
        fraction it last reported (0 without one), divided by ``total``.
    :param reported: the sum of the calls' own reports (``done`` summed, ``total``
        summed when every reporting call gave one), or ``None`` if no call reported.
    """

    done: int
    total: int
    fraction: float
    reported: Progress | None

    @classmethod
    def of(cls, calls: Iterable[tuple[bool, Progress | None]]) -> PoolProgress:
        """Aggregate ``(finished, last report)`` of each call."""
        done = total = 0
        share = 0.0
        reported_done: Number = 0
        reported_total: Number | None = 0
        reporting = False
        for finished, progress in calls:
            total += 1
            if finished:
                done += 1
                share += 1.0
            elif progress is not None and progress.fraction is not None:
                share += progress.fraction
            if progress is not None:
                reporting = True
                reported_done += progress.done
                if progress.total is None or reported_total is None:
                    reported_total = None
                else:
                    reported_total += progress.total
        reported = Progress(reported_done, reported_total) if reporting else None
        return cls(done, total, share / total if total else 1.0, reported)

    def as_dict(self) -> dict[str, Any]:
        """``{"done", "total", "fraction", "reported"}``, JSON-ready."""
        reported = self.reported.as_dict() if self.reported is not None else None
        return {
            "done": self.done,
            "total": self.total,
            "fraction": self.fraction,
            "reported": reported,
        }


def _is_number(value: Any) -> TypeGuard[Number]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def progress_meta(done: Any, total: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The stored meta of one report, checked: raise a clear error at the report rather
    than a failure of the backend's serializer later.

    :raises ValueError: ``done`` or ``total`` out of range.
    :raises TypeError: not numbers, or a ``meta`` value that is not JSON-serializable.
    """
    if not _is_number(done):
        raise TypeError(f"progress(done=...) must be a finite number, not {done!r}")
    if done < 0:
        raise ValueError(f"progress(done={done!r}) cannot be negative")
    if total is not None:
        if not _is_number(total):
            raise TypeError(f"progress(total=...) must be a finite number or None, not {total!r}")
        if total <= 0:
            raise ValueError(
                f"progress(total={total!r}) must be more than 0; leave it out (None) when "
                "the amount of work is unknown"
            )
        if done > total:
            raise ValueError(f"progress(done={done!r}) is more than total={total!r}")
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"progress({key}=...) must be JSON-serializable (it is stored in the result "
                f"backend), not {type(value).__name__}"
            ) from None
    return {"done": done, "total": total, **meta}


class ProgressReporter:
    """Coalesces the progress reports of one running call.

    A report is written at once when the last write is at least ``interval`` seconds
    old; a report sooner than that is held, and written by the next report that comes
    after the interval, or by :meth:`flush` when the call ends. Everything happens on
    the reporting thread (no timer thread: Celery's backends are not all thread-safe),
    so a held report waits for the next report or the end of the call.

    :param write: stores one report's meta (``update_state``).
    :param interval: seconds between two writes.
    """

    def __init__(self, write: Callable[[dict[str, Any]], None], interval: float) -> None:
        self._write = write
        self.interval = interval
        self._last = -math.inf
        self._held: dict[str, Any] | None = None
        self._lock = threading.Lock()  # a call may report from threads of its own
        #: Writes made so far (for measurement and tests).
        self.writes = 0

    def report(self, meta: dict[str, Any]) -> None:
        """Report ``meta`` (from :func:`progress_meta`): write it now or hold it."""
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._held = meta
                return
            self._held = None
            self._last = now
            self._send(meta)

    def flush(self) -> None:
        """Write the held report, if any (the call is ending)."""
        with self._lock:
            held, self._held = self._held, None
            if held is not None:
                self._send(held)

    def _send(self, meta: dict[str, Any]) -> None:
        self.writes += 1
        self._write(meta)
