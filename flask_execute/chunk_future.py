"""The Future of one ``celery.map`` chunk.

A chunk is one Celery message that runs many calls of one function. Its
:class:`ChunkFuture` is internal: the tracker resolves it like any Future, and it fans
what the chunk reports out to the Futures of its calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flask_execute.cancelling import CancelMarks
from flask_execute.chunk_ids import call_id
from flask_execute.futures import Future, FutureOwner

if TYPE_CHECKING:
    from flask_execute.wire import Wire

#: State a long chunk stores while it runs: the outcomes of the calls done so far.
PARTIAL = "PARTIAL"


class ChunkFuture(Future):
    """The internal Future of one chunk: resolving it resolves its calls' Futures.

    :param task_id: the chunk's task id.
    :param owner: the application's tracker.
    :param name: the mapped function's display name.
    :param calls: the Futures of the chunk's calls, by index (``None`` for a call no
        one here waits for).
    :param wire: opens the outcomes.
    :param marks: where cancelled calls are marked.
    :param whole: whether ``calls`` are the Futures of every call of the chunk (a map
        sent here); ``False`` for a chunk met through ``celery.get`` of some of its
        calls, which others may be waiting for.

    Never handed to users: it lives in the tracker until the chunk ends.
    """

    def __init__(
        self,
        task_id: str,
        owner: FutureOwner,
        name: str | None,
        calls: Sequence[Future | None],
        wire: Wire,
        marks: CancelMarks,
        *,
        whole: bool = True,
    ) -> None:
        super().__init__(task_id, owner, name)
        self.calls = calls
        self._whole = whole
        self._wire = wire
        self._marks = marks

    # -- from the result source --------------------------------------------------------

    def set_state(self, state: str, info: Any = None) -> None:
        if state == PARTIAL:  # the calls a long chunk has done so far
            self._fan_out(info, partial=True)
        # Other states of the chunk itself (STARTED ...) are not any call's state.

    def deliver_call(self, index: int, status: str, info: Any) -> None:
        """A state a call reported for itself (progress)."""
        future = self.call_future(index)
        if future is not None:
            future.set_state(status, info)

    def _finish(self, state: str, info: Any, exception: BaseException | None) -> None:
        super()._finish(state, None, exception)
        if exception is None:
            self._fan_out(info)
            return
        self._fail_all(exception)  # the chunk failed as a whole (its worker was lost ...)

    def _set_cancelled(self) -> bool:
        cancelled = super()._set_cancelled()
        for future in self._waiting():
            future._set_cancelled()
        return cancelled

    def _waiting(self) -> list[Future]:
        return [f for f in self.calls if f is not None]

    def _fail_all(self, exception: BaseException) -> None:
        for future in self._waiting():
            future.set_exception(exception)

    def _fan_out(self, packed: Any, partial: bool = False) -> None:
        try:
            if partial:
                packed = self._wire.unpack_result(packed, task_id=self.id)
            start, outcomes = packed
        except Exception as exc:  # forged, or not ours: the calls fail, never hang
            self._fail_all(exc)
            return
        for index, outcome in enumerate(outcomes, start):
            future = self.call_future(index)
            if future is None or future.done():
                continue
            try:
                ok, value = self._wire.open_outcome(outcome)
            except Exception as exc:  # the value cannot be rebuilt here
                ok, value = False, exc
            if ok:
                future.set_result(value)
            elif value is None:
                future._set_cancelled()
            else:
                future.set_exception(value)

    def call_future(self, index: int) -> Future | None:
        """The Future of call ``index``, if one waits here."""
        return self.calls[index] if 0 <= index < len(self.calls) else None

    def adopt(self, index: int, future: Future) -> None:
        """Make ``future`` the Future of call ``index`` (``celery.get`` of a call)."""
        calls = list(self.calls)
        calls += [None] * (index + 1 - len(calls))
        calls[index] = future
        self.calls = calls

    # -- from a call's Future ----------------------------------------------------------

    def cancel_call(self, index: int) -> None:
        """Mark call ``index`` cancelled so the worker skips it; once no other call of
        the chunk is still waiting (every call's Future being here), revoke the chunk
        itself."""
        self._marks.mark(call_id(self.id, index))
        if not self._whole or self._owner is None:
            return  # calls this process does not hold may still be wanted elsewhere
        waiting = (f for i, f in enumerate(self.calls) if i != index and f is not None)
        if all(f.done() for f in waiting):
            self._owner.revoke(self.id)
