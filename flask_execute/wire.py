"""What travels inside Celery's JSON messages: signed, serialized envelopes.

Celery's task and result serializers stay JSON-only. The function with its arguments,
and the result or exception, travel as a signed token (see :mod:`flask_execute.signing`)
inside the JSON body. A token is verified before its bytes reach the serializer: its
format version, its signature, the task id it was made for and, for a call, its age.
Calls and results larger than ``CELERY_MAX_PAYLOAD`` are refused when packed.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import pluggy

from flask_execute.errors import RemoteError, RemoteTraceback, SerializationError, TaskFailed
from flask_execute.serializers import Serializer
from flask_execute.signing import Signer

#: Key of the JSON object a task returns: ``{RESULT_KEY: token}``.
RESULT_KEY = "flask_execute"
#: Beside :data:`RESULT_KEY` in a streamed call's result: a reader elsewhere tells a
#: stream from its stored outcome alone (``celery.get``), with no read of its items.
STREAM_MARK = "stream"
_ENVELOPE = frozenset((RESULT_KEY, STREAM_MARK))

_CALL = b"call:"
_CALLS = b"calls:"
_RESULT = b"result:"
_ERROR = b"error:"
#: The first byte of one call's outcome inside a chunk's result (see :meth:`Wire.outcome`).
_VALUE, _FAILURE, _SKIPPED = b"R", b"E", b"C"
#: The outcome of a call the worker skipped because it was cancelled.
SKIPPED = _SKIPPED
#: Characters of a message or traceback kept when an exception travels as text only.
_TEXT_CAP = 64 * 1024


class Wire:
    """Packs calls, results and exceptions into signed tokens and back.

    :param serializer: turns objects into bytes.
    :param signer: signs and verifies those bytes.

    Every token is bound to its task id: the packing methods take the id the token is
    for, the unpacking ones the id it is expected for. ``limit`` caps the serialized
    size in bytes (``CELERY_MAX_PAYLOAD``); ``None`` is no cap.
    """

    def __init__(self, serializer: Serializer, signer: Signer) -> None:
        self.serializer = serializer
        self.signer = signer
        self._name = serializer.name.encode()

    def _unpack(self, token: str, kind: bytes, task_id: str, max_age: float | None = None) -> Any:
        data = self.signer.verify(token, kind + self._name, task_id=task_id, max_age=max_age)
        return self.serializer.loads(data)

    # -- calls -------------------------------------------------------------------------

    def pack_call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        task_id: str,
        due: float | None = None,
        limit: int | None = None,
    ) -> str:
        """Pack a call for task ``task_id``, due at ``due`` (POSIX time) or at once.

        :raises SerializationError: a part cannot be serialized, or the call is larger
            than ``limit``; the message names the part (and its size).
        """
        try:
            data = self.serializer.dumps((fn, args, dict(kwargs)))
        except Exception as exc:
            raise self._explain(fn, args, kwargs, exc) from exc
        if limit is not None and len(data) > limit:
            raise self._too_large(fn, args, kwargs, len(data), limit)
        return self.signer.sign(data, _CALL + self._name, task_id=task_id, due=due)

    def unpack_call(
        self, token: str, *, task_id: str, max_age: float | None = None
    ) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """Open a call made for ``task_id`` no longer than ``max_age`` seconds ago."""
        fn, args, kwargs = self._unpack(token, _CALL, task_id, max_age)
        return fn, tuple(args), kwargs

    def renew_call(
        self, token: str, *, task_id: str, due: float | None, chunk: bool = False
    ) -> str:
        """Sign a call (or with ``chunk``, a chunk of calls) again, with a fresh time and
        a new due time (a retry, a call that waited for its inputs); its bytes are not
        unpickled."""
        context = (_CALLS if chunk else _CALL) + self._name
        data = self.signer.verify(token, context, task_id=task_id)
        return self.signer.sign(data, context, task_id=task_id, due=due)

    def _parts(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> list[tuple[str, Any]]:
        parts: list[tuple[str, Any]] = [("the function", fn)]
        parts += [(f"positional argument {i}", a) for i, a in enumerate(args)]
        parts += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        return parts

    def _explain(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        exc: Exception,
        call: str = "",
    ) -> SerializationError:
        label = getattr(fn, "__qualname__", repr(fn))
        for where, value in self._parts(fn, args, kwargs):
            try:
                self.serializer.dumps(value)
            except Exception as inner:
                return SerializationError(
                    f"cannot submit {call}{label}(): {where} ({_short_repr(value)}) cannot be "
                    f"serialized with {self.serializer.name}: {inner}. Pass a reference "
                    f"(an id, a path) and load the object inside the function."
                )
        return SerializationError(f"cannot submit {label}(): {exc}")

    def _too_large(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        size: int,
        limit: int,
        call: str = "",
    ) -> SerializationError:
        label = getattr(fn, "__qualname__", repr(fn))
        sizes = [(len(self.serializer.dumps(v)), w, v) for w, v in self._parts(fn, args, kwargs)]
        largest, where, value = max(sizes, key=lambda item: item[0])
        return SerializationError(
            f"cannot submit {call}{label}(): the call is {_size(size)} serialized, over "
            f"CELERY_MAX_PAYLOAD ({limit} bytes); {where} ({_short_repr(value)}) is "
            f"{_size(largest)}. Pass a reference (a path, a key) and load the data "
            "inside the function, or raise CELERY_MAX_PAYLOAD."
        )

    # -- results -----------------------------------------------------------------------

    def pack_result(self, value: Any, *, task_id: str, limit: int | None = None) -> dict[str, str]:
        """Pack the return value of task ``task_id`` as ``{RESULT_KEY: token}``."""
        try:
            data = self.serializer.dumps(value)
        except Exception as exc:
            raise SerializationError(
                f"the task's return value ({_short_repr(value)}) cannot be serialized with "
                f"{self.serializer.name}: {exc}"
            ) from exc
        if limit is not None and len(data) > limit:
            raise SerializationError(
                f"the task's return value ({_short_repr(value)}) is {_size(len(data))} "
                f"serialized, over CELERY_MAX_PAYLOAD ({limit} bytes): store the data "
                "and return a reference (a path, a key), or raise CELERY_MAX_PAYLOAD"
            )
        return {RESULT_KEY: self.signer.sign(data, _RESULT + self._name, task_id=task_id)}

    def unpack_result(self, value: Any, *, task_id: str) -> Any:
        """Open the result envelope of ``task_id``; a plain JSON result (a registered
        task's) passes."""
        if isinstance(value, dict) and RESULT_KEY in value and set(value) <= _ENVELOPE:
            return self._unpack(value[RESULT_KEY], _RESULT, task_id)
        return value

    # -- exceptions --------------------------------------------------------------------

    def pack_error(
        self, exc: BaseException, *, task_id: str, limit: int | None = None
    ) -> RemoteError:
        """Return the :exc:`RemoteError` task ``task_id`` raises in place of ``exc``.

        An exception that cannot be rebuilt on the other side, or is larger than
        ``limit``, travels as its type name and message (cut to fit).
        """
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        summary = f"{name}: {exc}"
        token = self.signer.sign(self._error_data(exc, limit), _ERROR + self._name, task_id=task_id)
        return RemoteError(token, summary[:_TEXT_CAP])

    def unpack_error(self, error: RemoteError, *, task_id: str) -> BaseException:
        """Rebuild the original exception of ``task_id``, with the worker's traceback as
        its cause."""
        return _rebuild_error(self._unpack(error.args[0], _ERROR, task_id))

    def _error_data(self, exc: BaseException, limit: int | None) -> bytes:
        tb = "".join(traceback.format_exception(type(exc), exc, user_frames(exc.__traceback__)))
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        try:
            data = self.serializer.dumps((exc, tb))
            self.serializer.loads(self.serializer.dumps(exc))  # must rebuild on the other side
            if limit is not None and len(data) > limit:
                raise OverflowError
        except Exception:
            data = self.serializer.dumps((None, tb[-_TEXT_CAP:], name, str(exc)[:_TEXT_CAP]))
        return data

    # -- chunks: many calls of one function in one message -----------------------------

    def dump_call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        index: int,
        limit: int | None = None,
    ) -> bytes:
        """Serialize the arguments of call ``index`` of a chunk of ``fn``: its positional
        arguments and its own keywords (over those the chunk shares).

        :raises SerializationError: an argument cannot be serialized, or they are larger
            than ``limit``; the message names the call and the argument.
        """
        try:
            data = self.serializer.dumps((args, dict(kwargs)))
        except Exception as exc:
            raise self._explain(fn, args, kwargs, exc, f"call {index} of ") from exc
        if limit is not None and len(data) > limit:
            raise self._too_large(fn, args, kwargs, len(data), limit, f"call {index} of ")
        return data

    def dump_function(
        self, fn: Callable[..., Any], kwargs: Mapping[str, Any], limit: int | None = None
    ) -> bytes:
        """Serialize what every call of a chunk shares: the function and its keywords.

        :raises SerializationError: a part cannot be serialized, or they are larger
            than ``limit``.
        """
        try:
            data = self.serializer.dumps((fn, dict(kwargs)))
        except Exception as exc:
            raise self._explain(fn, (), kwargs, exc) from exc
        if limit is not None and len(data) > limit:
            raise self._too_large(fn, (), kwargs, len(data), limit)
        return data

    def sign_calls(
        self, shared: bytes, calls: list[bytes], *, task_id: str, due: float | None = None
    ) -> str:
        """Sign a chunk: ``shared`` from :meth:`dump_function`, and one
        :meth:`dump_call` per call."""
        data = self.serializer.dumps((shared, calls))
        return self.signer.sign(data, _CALLS + self._name, task_id=task_id, due=due)

    def unpack_calls(
        self, token: str, *, task_id: str, max_age: float | None = None
    ) -> tuple[Callable[..., Any], dict[str, Any], list[bytes]]:
        """Open a chunk made for ``task_id``: the function, the keywords of every call,
        and each call's arguments still serialized (open them with :meth:`load`)."""
        shared, calls = self._unpack(token, _CALLS, task_id, max_age)
        fn, kwargs = self.serializer.loads(shared)
        return fn, kwargs, calls

    def load(self, data: bytes) -> Any:
        """Deserialize a part of a verified token (a call's arguments)."""
        return self.serializer.loads(data)

    def outcome(self, value: Any, limit: int | None = None) -> bytes:
        """One call's return value, as an outcome for :meth:`pack_outcomes`; a value
        that cannot be serialized, or is over ``limit``, is the call's failure."""
        try:
            data = self.serializer.dumps(value)
            if limit is not None and len(data) > limit:
                raise SerializationError(
                    f"the call's return value ({_short_repr(value)}) is {_size(len(data))} "
                    f"serialized, over CELERY_MAX_PAYLOAD ({limit} bytes)"
                )
        except Exception as exc:
            return self.failure(exc, limit)
        return _VALUE + data

    def failure(self, exc: BaseException, limit: int | None = None) -> bytes:
        """One call's exception, as an outcome for :meth:`pack_outcomes`."""
        return _FAILURE + self._error_data(exc, limit)

    def pack_outcomes(self, start: int, outcomes: list[bytes], *, task_id: str) -> dict[str, str]:
        """Pack the outcomes of a chunk's calls ``start``, ``start + 1`` ... as one signed
        result of task ``task_id`` (open it with :meth:`unpack_result`)."""
        data = self.serializer.dumps((start, outcomes))
        return {RESULT_KEY: self.signer.sign(data, _RESULT + self._name, task_id=task_id)}

    def open_outcome(self, outcome: bytes) -> tuple[bool, Any]:
        """``(True, value)`` or ``(False, exception)`` of one call; ``(False, None)``
        for a call the worker skipped."""
        kind, data = outcome[:1], outcome[1:]
        if kind == _VALUE:
            return True, self.serializer.loads(data)
        if kind == _FAILURE:
            return False, _rebuild_error(self.serializer.loads(data))
        return False, None


def _rebuild_error(payload: tuple[Any, ...]) -> BaseException:
    exc: BaseException = payload[0] if payload[0] is not None else TaskFailed(*payload[2:])
    if exc.__cause__ is None:  # one that brings its own (DependencyFailed) keeps it
        exc.__cause__ = RemoteTraceback(payload[1])
    return exc


_INTERNAL = tuple(
    os.path.dirname(m.__file__ or "") + os.sep for m in (pluggy, sys.modules["flask_execute"])
)


def user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Skip the leading frames of flask_execute, its plugins and pluggy."""
    first = tb
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_INTERNAL + _PLUGINS):
        tb = tb.tb_next
    return tb or first


_PLUGINS = (os.path.join(os.path.dirname(os.path.dirname(__file__)), "plugins") + os.sep,)


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"
