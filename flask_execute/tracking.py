"""Future tracking and result decoding: the pending Futures of one application.

The :class:`Tracker` of an application (``state.futures``) keeps every Future still
waiting, starts the application's one result source on first use, and turns the task
states the source reports (Celery result metas) into Future updates: progress,
results, rebuilt exceptions, cancellation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from celery import states
from celery.backends.base import BaseKeyValueStoreBackend
from celery.result import GroupResult
from celery.utils import uuid

from flask_execute.cancelling import CancelMarks
from flask_execute.chunk_future import ChunkFuture
from flask_execute.chunk_ids import call_id, split_call_id
from flask_execute.errors import RemoteError, UnknownTaskError, time_limit_error
from flask_execute.stream_future import StreamFuture
from flask_execute.streams import STREAM, StreamEnd, batch_binding, batch_key
from flask_execute.wire import STREAM_MARK

if TYPE_CHECKING:
    from celery.result import AsyncResult

    from flask_execute.futures import Future
    from flask_execute.listener import ResultSource
    from flask_execute.runtime import AppState

_ERROR_MODULE = RemoteError.__module__

logger = logging.getLogger("flask_execute")


class Tracker:
    """The pending Futures of one application, fed by its result source.

    :param state: the application's record.

    It is the owner of every Future the application hands out
    (:class:`~flask_execute.futures.FutureOwner`): cancelling, callbacks and
    Celery attributes go through it.
    """

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._pending: dict[str, Future] = {}
        self._lock = threading.RLock()  # a source may track while it starts
        self._source: ResultSource | None = None
        self._callbacks: ThreadPoolExecutor | None = None

    # -- which futures wait ------------------------------------------------------------

    def track(self, future: Future, *, listen: bool = True) -> None:
        """Register ``future`` so that deliveries for its id resolve it.

        :param listen: also tell the result source (started on first use) that the task
            is about to be published; ``False`` for a task run in this process.
        """
        source = self.source() if listen else None
        self._pending[future.id] = future
        if source is not None:
            source.submitted(future.id, future.name)

    def untrack(self, task_id: str) -> None:
        """Stop waiting for ``task_id`` here (a task run in this process, say)."""
        self._pending.pop(task_id, None)

    def withdraw(self, task_id: str) -> None:
        """Forget ``task_id``, whose message was never published, here and in the
        backend: no process is left waiting for it."""
        self._pending.pop(task_id, None)
        source = self._source
        if source is not None:
            try:
                source.withdrawn(task_id)
            except Exception as exc:  # the backend is down too: the record expires
                logger.warning("could not withdraw %s: %s", task_id, exc)

    def pending(self, task_id: str) -> Future | None:
        """The Future that waits here for ``task_id`` (a ``map`` chunk's too), if any."""
        return self._pending.get(task_id)

    def is_pending(self, task_id: str) -> bool:
        """Whether a Future of this process waits for ``task_id``."""
        return task_id in self._pending or self._group_of(task_id) is not None

    def _group_of(self, task_id: str) -> tuple[ChunkFuture, int] | None:
        """The tracked chunk call ``task_id`` belongs to, and its index there."""
        split = split_call_id(task_id)
        if split is None:
            return None
        group = self._pending.get(split[0])
        if not isinstance(group, ChunkFuture):
            return None
        return group, split[1]

    def pending_ids(self) -> list[str]:
        """The task ids still waiting, in submission order."""
        return list(self._pending)

    # -- the result source -------------------------------------------------------------

    def source(self) -> ResultSource:
        """The application's result source, started on first use."""
        if self._source is None:
            with self._lock:
                if self._source is None:
                    source = self.state.pm.make_result_source(self.state.app)
                    source.start()
                    self._source = source
        return self._source

    # -- resolution --------------------------------------------------------------------

    def deliver(self, task_id: str, meta: Mapping[str, Any]) -> None:
        """Feed a task's state (a Celery result meta) to its Future, if tracked here."""
        future = self._pending.get(task_id)
        if future is None:
            group = self._group_of(task_id)
            status = meta.get("status", states.PENDING)
            if group is not None and status not in states.READY_STATES:
                group[0].deliver_call(group[1], status, self._info(task_id, status, meta))
            return
        status = meta.get("status", states.PENDING)
        if status in states.READY_STATES:
            self._pending.pop(task_id, None)
            self.resolve(future, status, meta.get("result"))
        elif status != states.PENDING:
            future.set_state(status, self._info(task_id, status, meta))

    def _info(self, task_id: str, status: str, meta: Mapping[str, Any]) -> Any:
        """What an intermediate state shows as ``future.info``: for ``RETRY``, the
        exception being retried, rebuilt as a failure is."""
        info = meta.get("result")
        if status != states.RETRY or info is None:
            return info
        try:
            return self.decode_exception(info, task_id)
        except Exception as exc:  # forged, or it cannot be rebuilt here
            return exc

    def resolve(self, future: Future, status: str, result: Any) -> None:
        """Finish ``future`` with a final Celery state and what the backend stored."""
        if status == states.REVOKED:
            future._set_cancelled()
            return
        try:
            if status == states.SUCCESS:
                value = self.state.wire.unpack_result(result, task_id=future.id)
                if isinstance(value, StreamEnd) and not isinstance(future, StreamFuture):
                    value = value.value  # a stream's outcome, for a Future made without one
                future.set_result(value)
                return
            error = self.decode_exception(result, future.id)
        except Exception as exc:  # a forged result or one that cannot be rebuilt
            error = exc
        future.set_exception(error)

    def decode_exception(self, result: Any, task_id: str) -> BaseException:
        """Rebuild the exception of task ``task_id`` from what the backend stored."""
        wire = self.state.wire
        if isinstance(result, RemoteError):
            return wire.unpack_error(result, task_id=task_id)
        if isinstance(result, BaseException):
            # A worker's main process stores Celery's TimeLimitExceeded when the hard
            # limit ended a call: say which limit hit.
            return time_limit_error(result)
        if isinstance(result, dict):
            if (
                result.get("exc_type") == "RemoteError"
                and result.get("exc_module") == _ERROR_MODULE
            ):
                error = RemoteError(*result.get("exc_message", ()))
                return wire.unpack_error(error, task_id=task_id)
            exc: BaseException = self.state.celery_app.backend.exception_to_python(result)
            return time_limit_error(exc)
        return RuntimeError(f"task failed with {result!r}")

    def get(self, task_id: str) -> Future:
        """Return a Future for ``task_id``, submitted here or elsewhere (a call of a
        ``map`` too).

        :raises ~flask_execute.UnknownTaskError: nothing is known of ``task_id``.
        """
        existing = self._pending.get(task_id)
        if existing is not None:
            return existing
        group = self._group_of(task_id)
        if group is not None and (known := group[0].call_future(group[1])) is not None:
            return known
        source = self.source()
        meta = source.lookup(task_id)
        split = split_call_id(task_id)
        if split is not None and (meta is None or meta.get("status") not in states.READY_STATES):
            chunk_meta = source.lookup(split[0])
            if chunk_meta is not None:
                return self._get_call(split[0], split[1], chunk_meta, meta)
        if meta is None:
            raise UnknownTaskError(
                f"no task with id {task_id!r}: it was never submitted to this broker, or "
                "its result expired (result_expires)."
            )
        outcome = meta.get("result")
        if meta.get("status") == STREAM or (isinstance(outcome, dict) and STREAM_MARK in outcome):
            future: Future = self.stream_future(task_id, meta.get("name"))
        else:
            future = self.state.pm.make_future(self.state.app, task_id, meta.get("name"))
        self._pending[task_id] = future
        source.watch(task_id)
        self.deliver(task_id, meta)
        return future

    def _get_call(
        self,
        chunk_id: str,
        index: int,
        chunk_meta: Mapping[str, Any],
        meta: Mapping[str, Any] | None,
    ) -> Future:
        """The Future of call ``index`` of a ``map`` chunk sent elsewhere (or whose
        Futures are gone), fed by a chunk Future of its own."""
        state = self.state
        name = chunk_meta.get("name")
        future = state.pm.make_future(state.app, call_id(chunk_id, index), name)
        chunk = self._pending.get(chunk_id)
        if not isinstance(chunk, ChunkFuture):
            marks = CancelMarks(state.celery_app.backend)
            chunk = ChunkFuture(chunk_id, self, name, [], state.wire, marks, whole=False)
            self._pending[chunk_id] = chunk
        chunk.adopt(index, future)
        if meta is not None:
            self.deliver(future.id, meta)
        self.source().watch(chunk_id)
        self.deliver(chunk_id, chunk_meta)
        return future

    # -- what a Future needs (FutureOwner) ---------------------------------------------

    def revoke(self, task_id: str) -> None:
        """Stop ``task_id`` on the workers: a call of a ``map`` is marked for its chunk;
        a task goes to :func:`~flask_execute.hookspecs.flask_execute_cancel_task` (by
        default it may stop by itself first), or, with no answer there, to Celery's
        revoke with terminate."""
        group = self._group_of(task_id)
        if group is not None:
            group[0].cancel_call(group[1])
            return
        state = self.state
        if state.eager or state.pm.cancel_task(state.app, task_id):
            return
        state.celery_app.control.revoke(task_id, terminate=True)

    def refresh(self, task_id: str) -> None:
        """Read ``task_id``'s stored state now and deliver it, if its Future waits here.

        A Future calls this before it reports a timeout: a result whose pub/sub message
        was missed is read from its key instead. An unreachable backend leaves the
        Future as it is (the source's own timeouts bound the read).
        """
        group = self._group_of(task_id)
        if group is not None:
            task_id = group[0].id
        source = self._source
        if source is None or task_id not in self._pending:
            return
        try:
            meta = source.lookup(task_id)
        except Exception as exc:
            logger.warning("could not read the state of %s: %s", task_id, exc)
            return
        if meta is not None:
            self.deliver(task_id, meta)

    def async_result(self, task_id: str) -> AsyncResult:
        return self.state.celery_app.AsyncResult(task_id)

    def stream_future(self, task_id: str, name: str | None) -> StreamFuture:
        """The Future of a submitted generator function, reading its items here."""
        return StreamFuture(task_id, self, name, lambda index: self.read_batch(task_id, index))

    def read_batch(self, task_id: str, index: int) -> list[Any] | None:
        """The items of batch ``index`` of stream ``task_id``, ``None`` if there is no
        such batch (see :mod:`flask_execute.streams`)."""
        backend = self.state.celery_app.backend
        if not isinstance(backend, BaseKeyValueStoreBackend):
            return None  # it holds no streams (submit refuses them there)
        raw = backend.get(batch_key(backend, task_id, index))
        if not raw:
            return None
        items: list[Any] = self.state.wire.unpack_result(
            backend.decode(raw), task_id=batch_binding(task_id, index)
        )
        return items

    def task_token(self, task_id: str) -> str:
        """The status token of task ``task_id`` (``future.token``)."""
        return self.state.status_tokens.make("task", task_id)

    def pool_token(self, task_ids: list[str]) -> str:
        """Save ``task_ids`` as a Celery group result and return its status token
        (``pool.token``); the group expires with the results."""
        celery_app = self.state.celery_app
        group = GroupResult(uuid(), [celery_app.AsyncResult(i) for i in task_ids], app=celery_app)
        group.save()
        return self.state.status_tokens.make("pool", str(group.id))

    def run_callback(self, fn: Callable[[], None]) -> None:
        """Run a callback in the app context, off the result listener's thread."""
        app = self.state.app

        def in_context() -> None:
            with app.app_context():
                fn()

        source = self._source
        if source is not None and source.is_listener_thread():
            if self._callbacks is None:
                self._callbacks = ThreadPoolExecutor(1, thread_name_prefix="flask_execute-cb")
            self._callbacks.submit(in_context)
        else:
            in_context()

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the result source and the callback thread (futures stay as they are)."""
        source, self._source = self._source, None
        if source is not None:
            source.stop()
        callbacks, self._callbacks = self._callbacks, None
        if callbacks is not None:
            callbacks.shutdown(wait=False)

    def after_fork(self) -> None:
        """Forget threads and futures of the parent (called in a forked child)."""
        self._source = None
        self._callbacks = None
        self._pending = {}
        self._lock = threading.RLock()  # a source may track while it starts
