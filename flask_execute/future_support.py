"""What :class:`~flask_execute.futures.Future` is built from: the timeout it raises,
the protocol of its owner, and small helpers its companions share."""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from celery.result import task_join_will_block

if TYPE_CHECKING:
    from celery.result import AsyncResult
    from typing_extensions import TypeVar

    # A bare ``Future`` means ``Future[Any]`` to a type checker (PEP 696 default), so
    # code that does not care about the result type need not spell it out.
    T = TypeVar("T", default=Any)
    ItemT = TypeVar("ItemT", default=Any)
else:  # at run time a plain TypeVar: the generics cost nothing per future
    from typing import TypeVar

    T = TypeVar("T")
    ItemT = TypeVar("ItemT")

_TIMEOUT_IS_BUILTIN: bool = getattr(cf, "TimeoutError") is TimeoutError  # noqa: B009


if _TIMEOUT_IS_BUILTIN:
    FutureTimeout = TimeoutError
else:  # Python 3.10: concurrent.futures has its own TimeoutError

    class FutureTimeout(cf.TimeoutError, TimeoutError):  # type: ignore[no-redef,misc]
        """Raised by ``result(timeout)``: both the builtin and the futures TimeoutError."""


class FutureOwner(Protocol):
    """What a Future needs from its application (see :class:`~flask_execute.runtime.AppState`)."""

    def revoke(self, task_id: str) -> None: ...

    def run_callback(self, fn: Callable[[], None]) -> None: ...

    def async_result(self, task_id: str) -> AsyncResult: ...

    def refresh(self, task_id: str) -> None: ...

    def task_token(self, task_id: str) -> str: ...

    def pool_token(self, task_ids: list[str]) -> str: ...


#: Set while done callbacks run in this thread: waiting there for callbacks (its own
#: or those queued behind it) could never end.
_in_callbacks = threading.local()


def in_callbacks() -> bool:
    """Whether done callbacks are running in this thread."""
    return bool(getattr(_in_callbacks, "active", False))


def accepts_argument(fn: Callable[..., Any]) -> bool:
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): assume the standard protocol
        return True
    return True


def remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def refuse_wait_in_task(timeout: float | None) -> None:
    """Refuse to wait (``timeout`` not 0) for a Future inside a worker's task, as Celery
    refuses ``result.get()`` there: every pool process could end up waiting for tasks
    that none is left to run.

    :raises RuntimeError: in a worker process, outside ``allow_join_result()``.
    """
    if timeout != 0 and task_join_will_block():
        raise RuntimeError(
            "a task waits for a Future that is not done: its worker process would sit "
            "blocked, and once every process of the pool waits so, nothing runs what "
            "they wait for. Pass the Future as an argument instead (celery.submit("
            "next_step, future) runs next_step with its result once it is done); to "
            "wait anyway, wrap the wait in `with celery.result.allow_join_result():`"
        )
