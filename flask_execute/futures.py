"""``Future``: a Celery result behind the concurrent.futures API.

A :class:`Future` is a real :class:`concurrent.futures.Future`, resolved by the
application's one result listener (no thread or polling per future), so
``concurrent.futures.wait``, ``as_completed`` and ``asyncio.wrap_future`` accept it,
and ``await future`` works without any of them (see :mod:`flask_execute.aio`).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    RUNNING,
)
from typing import Any

from celery import states

from flask_execute import aio
from flask_execute.future_support import (
    FutureOwner,
    FutureTimeout,
    T,
    _in_callbacks,
    accepts_argument,
    in_callbacks,
    refuse_wait_in_task,
    remaining,
)
from flask_execute.progress import PROGRESS, Progress

__all__ = [
    "Future",
    "FutureOwner",
    "FutureTimeout",
    "accepts_argument",
    "in_callbacks",
    "remaining",
]

logger = logging.getLogger("flask_execute")


class Future(cf.Future[T]):
    """The result of one task; ``Future[int]`` to a type checker for a call of a
    function that returns an ``int``.

    :param task_id: the Celery task id.
    :param owner: the application state that resolves this future; ``None`` for a
        future resolved by hand.
    :param name: the task's display name.

    Beyond :class:`concurrent.futures.Future`: ``running()`` is true from submission
    until the task finishes (a queued task counts as running), ``cancel()`` revokes a
    queued task and asks a running one to stop (``current_task.cancelled``), and
    ``state``/``status``/``info`` follow
    the task's Celery state, including custom states set with
    ``current_task.update_state``. Any other attribute is read from Celery's
    :class:`~celery.result.AsyncResult` for the same id.
    """

    def __init__(self, task_id: str, owner: FutureOwner | None = None, name: str | None = None):
        super().__init__()
        self.id = task_id
        self.name = name
        self._owner = owner
        self._celery_state: str = states.PENDING
        self._info: Any = None
        self._progress: Progress | None = None
        self._progress_callbacks: list[Callable[[Future[T]], Any]] = []
        # Made when the future finishes with done callbacks waiting (an Event costs
        # about a kilobyte; a map holds one Future per call).
        self._callbacks_finished: threading.Event | None = None
        self._state = RUNNING

    #: Who is woken, and when (see :meth:`subscribe` and :meth:`_on_settled`): key ->
    #: (function, only once settled). A class default, so a future no one watches
    #: carries no dict; replaced whole on change, so it is read without the lock.
    _hooks: dict[object, tuple[Callable[[], None], bool]] | None = None

    # -- Celery's view -----------------------------------------------------------------

    @property
    def state(self) -> str:
        """The Celery state: ``PENDING``, ``STARTED``, ``PROGRESS``, ``SUCCESS`` ..."""
        return self._celery_state

    status = state

    @property
    def info(self) -> Any:
        """The metadata of the last state update, the result, or the exception."""
        return self._info

    @property
    def progress(self) -> Progress | None:
        """The last progress the call reported (``current_task.progress(done, total,
        **meta)``), or ``None`` before the first report; kept once the call is done."""
        return self._progress

    @property
    def token(self) -> str:
        """A signed, expiring token naming this task, for the status endpoint
        (``celery.blueprint()``): ``url_for("flask_execute.status", token=f.token)``.

        :raises RuntimeError: a Future made by hand, with no application.
        """
        if self._owner is None:
            raise RuntimeError(f"{self!r} belongs to no application: it has no token")
        return self._owner.task_token(self.id)

    @property
    def task_id(self) -> str:
        return self.id

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or self._owner is None:
            raise AttributeError(name)
        return getattr(self._owner.async_result(self.id), name)

    def __repr__(self) -> str:
        return f"<Future {self.name or 'task'} {self.id} {self._celery_state}>"

    # -- concurrent.futures API --------------------------------------------------------

    def running(self) -> bool:
        """``True`` while the task is queued or running."""
        with self._condition:
            return self._state == RUNNING

    def cancel(self) -> bool:
        """Revoke the task: a queued task never runs; a running one sees
        ``current_task.cancelled`` turn true, and is terminated if it is still running
        after ``CELERY_CANCEL_GRACE`` seconds. The Future is cancelled at once.

        :return: ``False`` if the task already finished, else ``True``.
        """
        with self._condition:
            if self._state == FINISHED:
                return False
            if self._state == CANCELLED_AND_NOTIFIED:
                return True
        if self._owner is not None:
            self._owner.revoke(self.id)
        return self._set_cancelled()

    def _set_cancelled(self) -> bool:
        with self._condition:
            if self._state == FINISHED:
                return False
            if self._state == CANCELLED_AND_NOTIFIED:
                return True
            self._state = CANCELLED_AND_NOTIFIED
            self._celery_state = states.REVOKED
            self._expect_callbacks()
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._notify()
        self._invoke_callbacks()
        return True

    def result(self, timeout: float | None = None) -> T:
        """Wait for and return the task's result; raise its exception.

        Done callbacks added before the task finished have finished too when this
        returns (unless called from a done callback, or ``timeout`` ran out first).

        :raises TimeoutError: the task did not finish within ``timeout`` seconds.
        :raises concurrent.futures.CancelledError: the task was revoked.
        """
        self._wait(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the task and return its exception, or ``None`` if it succeeded.

        Done callbacks have finished when this returns, as for :meth:`result`.
        """
        self._wait(timeout)
        return super().exception(0)

    def _wait(self, timeout: float | None) -> None:
        # Before reporting a timeout, read the stored state directly: a result whose
        # pub/sub message was missed is never reported as a timeout.
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            if self._state not in (CANCELLED_AND_NOTIFIED, FINISHED):
                refuse_wait_in_task(timeout)
                self._condition.wait(timeout)
        if not self.done() and self._owner is not None:
            self._owner.refresh(self.id)
        if not self.done():
            raise self._timeout(timeout)
        finished = self._callbacks_finished
        if finished is not None and not getattr(_in_callbacks, "active", False):
            finished.wait(remaining(deadline))

    def _timeout(self, timeout: float | None) -> BaseException:
        message = f"task {self.id} did not finish within {timeout} seconds (state {self.state})"
        return FutureTimeout(message)

    def add_done_callback(self, fn: Callable[..., Any]) -> None:
        """Call ``fn(future)`` (or ``fn()`` if it takes no argument) once, when done.

        The callback runs inside the Flask application context; an exception it raises
        is logged, never lost. Callbacks added before the task finished run in the
        order added, and :meth:`result`, :meth:`exception` and ``await`` return only
        once they have finished; one added later runs at once.
        """
        call = self._wrap_callback(fn)
        with self._condition:
            if self._state not in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED):
                self._done_callbacks.append(call)  # type: ignore[arg-type]
                return
        self._run_callbacks([call], None)

    def add_progress_callback(self, fn: Callable[..., Any]) -> None:
        """Call ``fn(future)`` (or ``fn()``) on each state the call records (not ``STARTED``)."""
        wrapped = self._wrap_callback(fn)
        self._progress_callbacks.append(lambda _future: self._run_callbacks([wrapped], None))

    def _wrap_callback(self, fn: Callable[..., Any]) -> Callable[[], None]:
        takes_future = accepts_argument(fn)

        def call() -> None:
            try:
                fn(self) if takes_future else fn()
            except Exception:
                logger.exception("callback %r of %r raised", fn, self)

        return call

    def _invoke_callbacks(self) -> None:
        # Called by concurrent.futures once the future is done: the callbacks run as one
        # job, in the order added, and then mark themselves finished for result().
        callbacks: list[Callable[[], None]] = list(self._done_callbacks)  # type: ignore[arg-type]
        if callbacks:
            self._run_callbacks(callbacks, self._callbacks_finished)
        else:
            self._settle()

    def _expect_callbacks(self) -> None:
        # Under the lock, before waiters wake: result() must find the event to wait on.
        if self._done_callbacks:
            self._callbacks_finished = threading.Event()

    def _run_callbacks(
        self, callbacks: list[Callable[[], None]], finished: threading.Event | None
    ) -> None:
        def job() -> None:
            _in_callbacks.active = True
            try:
                for callback in callbacks:
                    callback()
            finally:
                _in_callbacks.active = False
                if finished is not None:
                    finished.set()
                    self._settle()

        if not callbacks or self._owner is None:
            job()
        else:
            self._owner.run_callback(job)

    # -- await, and the internal wake-ups behind it ------------------------------------

    def __await__(self) -> Generator[Any, None, T]:
        """``await future``: the result or the task's exception, as :meth:`result`.

        No thread waits: the future wakes the event loop when it settles. Cancelling
        the awaiting coroutine leaves the task running (:meth:`cancel` revokes it). A
        revoked task raises :exc:`concurrent.futures.CancelledError`, as :meth:`result`
        does: an :exc:`asyncio.CancelledError` would read as the awaiting coroutine's
        own cancellation.
        """
        return aio.outcome(self).__await__()

    # Await, as_completed and event streams wake through hooks, not done callbacks: a
    # done callback runs in the app context on the callback thread (started for it),
    # queued behind slow user callbacks. A hook is one quick call (call_soon_threadsafe,
    # an event set) from the thread that changes the future.

    def subscribe(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call ``fn()`` on every change of state and once when done, until the returned
        function is called to unsubscribe.

        ``fn`` runs on the thread that delivers the change (the result listener), with
        no application context: it must be quick and must not raise (set an event,
        queue a message). What the status endpoint's event streams use.
        """
        key = object()
        if not self._hook(key, fn, settled_only=False):
            fn()  # done already: the one call it is owed
        return lambda: self._unhook(key)

    def _on_settled(self, hook: Callable[[], None]) -> bool:
        """Call ``hook()`` once done and once the done callbacks added before then have
        finished (``await`` keeps :meth:`result`'s promise); it must never block.

        :return: ``False``, and ``hook`` is not kept, if the future has settled already.
        """
        return self._hook(hook, hook, settled_only=True)

    def _off_settled(self, hook: Callable[[], None]) -> None:
        """Forget ``hook`` (its waiter gave up) unless it was called already."""
        self._unhook(hook)

    def _hook(self, key: object, fn: Callable[[], None], *, settled_only: bool) -> bool:
        # Under the lock, against the transitions: a hook is kept only if what it
        # waits for is still to come, so it is never called twice.
        with self._condition:
            done = self._state in (CANCELLED_AND_NOTIFIED, FINISHED)
            finished = self._callbacks_finished
            if done and (not settled_only or finished is None or finished.is_set()):
                return False
            self._hooks = {**(self._hooks or {}), key: (fn, settled_only)}
            return True

    def _unhook(self, key: object) -> None:
        with self._condition:
            if self._hooks and key in self._hooks:
                self._hooks = {k: v for k, v in self._hooks.items() if k is not key}

    def _notify(self) -> None:
        # A change of state (or the end): wake the subscribers.
        for fn, settled_only in (self._hooks or {}).values():
            if not settled_only:
                _wake(fn, self)

    def _settle(self) -> None:
        # Done, and the done callbacks have run: wake the settled-only hooks, and drop
        # every hook (nothing changes any more; subscribers had their last call).
        with self._condition:
            hooks, self._hooks = self._hooks, None
        for fn, settled_only in (hooks or {}).values():
            if settled_only:
                _wake(fn, self)

    # -- resolution, by the result source ----------------------------------------------

    def set_state(self, state: str, info: Any = None) -> None:
        """Record an intermediate Celery state (``STARTED``, ``PROGRESS`` ...)."""
        with self._condition:
            if self._state != RUNNING:
                return
            self._celery_state = state
            self._info = info
            if state == PROGRESS:
                self._progress = Progress.from_info(info) or self._progress
        self._notify()
        for callback in [] if state == states.STARTED else list(self._progress_callbacks):
            callback(self)  # STARTED is the worker's mark, not a report from the call

    def set_result(self, result: Any) -> None:
        """Finish with ``result`` (a second answer for the same task is ignored)."""
        self._finish(states.SUCCESS, result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        """Finish with ``exception`` (a second answer for the same task is ignored)."""
        self._finish(states.FAILURE, exception, exception)

    def _finish(self, state: str, info: Any, exception: BaseException | None) -> None:
        # One transition under the lock: the listener and a reader of the result key
        # (see result()) may both answer, and only the first counts.
        with self._condition:
            if self._state != RUNNING:
                return
            self._celery_state = state
            self._info = info
            if exception is None:
                self._result = info
            else:
                self._exception = exception
            self._state = FINISHED
            self._expect_callbacks()
            for waiter in self._waiters:
                if exception is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            self._condition.notify_all()
        self._notify()
        self._invoke_callbacks()


def _wake(fn: Callable[[], None], future: Future) -> None:
    try:
        fn()
    except Exception:  # a waker must never break the thread that changes the future
        logger.exception("wake-up %r of %r failed", fn, future)
