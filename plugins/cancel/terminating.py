"""The worker's main process: cancels it received, and terminating tasks past their grace.

Both live in the main process of every worker that loads the application; the pool
processes it forks read :data:`cancels_received`.
"""

from __future__ import annotations

import logging
import mmap
import struct
import time
from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.worker.state import active_requests

from flask_execute.cancelling import CancelMarks

if TYPE_CHECKING:
    from celery.worker.consumer import Consumer

logger = logging.getLogger("flask_execute")

#: Seconds between two looks of a worker at the marks of the tasks it runs.
SWEEP_INTERVAL = 0.5


class SharedCounter:
    """A count the worker's main process keeps and the pool processes it forks read.

    Shared memory (an anonymous shared mapping, made before the pool forks), so a pool
    process reads it without a round trip. Until :meth:`share` it is not shared.
    """

    _FORMAT = "Q"

    def __init__(self) -> None:
        self._memory: mmap.mmap | None = None

    @property
    def shared(self) -> bool:
        return self._memory is not None

    def share(self) -> None:
        """Make the count shared with the processes forked from now on."""
        if self._memory is None:
            self._memory = mmap.mmap(-1, struct.calcsize(self._FORMAT))

    @property
    def value(self) -> int:
        if self._memory is None:
            return 0
        value: int = struct.unpack_from(self._FORMAT, self._memory)[0]
        return value

    def add(self) -> None:
        """Count one more (from the main process only: one writer, no lock)."""
        if self._memory is not None:
            struct.pack_into(self._FORMAT, self._memory, 0, self.value + 1)


#: How many ``flask_execute_cancel`` broadcasts this worker received.
cancels_received = SharedCounter()


class TerminateCancelled(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker step: terminates the cancelled tasks still running past their time.

    Every :data:`SWEEP_INTERVAL` seconds while the worker runs tasks, it reads the
    cancel marks of all of them in one round trip and terminates those whose time has
    passed with Celery's own ``Request.terminate`` (what ``revoke(terminate=True)``
    does), so the task is stored as ``REVOKED`` and its pool process replaced. A ``map``
    chunk has a mark of its own only once none of its calls is waiting. Only pools that
    can end one task can terminate (prefork; not ``solo`` or ``threads``).

    Made when the worker starts, before its pool forks: it shares
    :data:`cancels_received` with the pool processes.
    """

    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        cancels_received.share()
        self._timer: Any = None
        self._failing = False

    def start(self, c: Consumer) -> None:
        self._timer = c.timer.call_repeatedly(SWEEP_INTERVAL, self.sweep, (c,))

    def stop(self, c: Consumer) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    shutdown = stop

    def sweep(self, c: Consumer) -> None:
        """Terminate the running tasks whose cancel marks say their time has passed."""
        running = {r.id: r for r in tuple(active_requests) if r.time_start}
        if not running:
            return
        try:
            deadlines = CancelMarks(c.app.backend).deadlines(list(running))
        except Exception as exc:  # the backend is down: look again next time
            if not self._failing:
                logger.warning("could not read cancel marks: %s", exc)
            self._failing = True
            return
        self._failing = False
        now = time.time()
        for task_id, deadline in deadlines.items():
            request = running[task_id]
            if deadline > now or request not in active_requests:
                continue
            logger.info("terminating cancelled task %s", task_id)
            try:
                request.terminate(c.pool, signal="TERM")
            except NotImplementedError:  # the solo and threads pools cannot
                logger.warning(
                    "the %s pool cannot terminate cancelled tasks; they "
                    "run until they stop by themselves",
                    type(c.pool).__module__,
                )
                self.stop(c)
                return
