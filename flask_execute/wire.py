"""What travels inside Celery's JSON messages: signed, serialized envelopes.

Celery's task and result serializers stay JSON-only. The function with its arguments,
and the result or exception, travel as a signed token (see :mod:`flask_execute.signing`)
inside the JSON body. A token is verified before its bytes reach the serializer.
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

_CALL = b"call:"
_RESULT = b"result:"
_ERROR = b"error:"


class Wire:
    """Packs calls, results and exceptions into signed tokens and back.

    :param serializer: turns objects into bytes.
    :param signer: signs and verifies those bytes.
    """

    def __init__(self, serializer: Serializer, signer: Signer) -> None:
        self.serializer = serializer
        self.signer = signer
        self._name = serializer.name.encode()

    def _pack(self, obj: Any, kind: bytes) -> str:
        return self.signer.sign(self.serializer.dumps(obj), kind + self._name)

    def _unpack(self, token: str, kind: bytes) -> Any:
        return self.serializer.loads(self.signer.verify(token, kind + self._name))

    # -- calls -------------------------------------------------------------------------

    def pack_call(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> str:
        """Pack a call; raise :exc:`SerializationError` naming the part that fails."""
        try:
            return self._pack((fn, args, dict(kwargs)), _CALL)
        except Exception as exc:
            raise self._explain(fn, args, kwargs, exc) from exc

    def unpack_call(self, token: str) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        fn, args, kwargs = self._unpack(token, _CALL)
        return fn, tuple(args), kwargs

    def _explain(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        exc: Exception,
    ) -> SerializationError:
        label = getattr(fn, "__qualname__", repr(fn))
        parts: list[tuple[str, Any]] = [("the function", fn)]
        parts += [(f"positional argument {i}", a) for i, a in enumerate(args)]
        parts += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        for where, value in parts:
            try:
                self.serializer.dumps(value)
            except Exception as inner:
                return SerializationError(
                    f"cannot submit {label}(): {where} ({_short_repr(value)}) cannot be "
                    f"serialized with {self.serializer.name}: {inner}. Pass a reference "
                    f"(an id, a path) and load the object inside the function."
                )
        return SerializationError(f"cannot submit {label}(): {exc}")

    # -- results -----------------------------------------------------------------------

    def pack_result(self, value: Any) -> dict[str, str]:
        try:
            return {RESULT_KEY: self._pack(value, _RESULT)}
        except Exception as exc:
            raise SerializationError(
                f"the task's return value ({_short_repr(value)}) cannot be serialized with "
                f"{self.serializer.name}: {exc}"
            ) from exc

    def unpack_result(self, value: Any) -> Any:
        """Open a result envelope; a plain JSON result (a registered task's) passes."""
        if isinstance(value, dict) and len(value) == 1 and RESULT_KEY in value:
            return self._unpack(value[RESULT_KEY], _RESULT)
        return value

    # -- exceptions --------------------------------------------------------------------

    def pack_error(self, exc: BaseException) -> RemoteError:
        """Return the :exc:`RemoteError` a task raises in place of ``exc``."""
        tb = "".join(traceback.format_exception(type(exc), exc, _user_frames(exc.__traceback__)))
        summary = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
        try:
            self.serializer.loads(self.serializer.dumps(exc))  # must rebuild on the other side
            token = self._pack((exc, tb), _ERROR)
        except Exception:
            name = f"{type(exc).__module__}.{type(exc).__qualname__}"
            token = self._pack((None, tb, name, str(exc)), _ERROR)
        return RemoteError(token, summary)

    def unpack_error(self, error: RemoteError) -> BaseException:
        """Rebuild the original exception, with the worker's traceback as its cause."""
        payload = self._unpack(error.args[0], _ERROR)
        exc: BaseException = payload[0] if payload[0] is not None else TaskFailed(*payload[2:])
        exc.__cause__ = RemoteTraceback(payload[1])
        return exc


_INTERNAL = tuple(
    os.path.dirname(m.__file__ or "") + os.sep for m in (pluggy, sys.modules["flask_execute"])
)


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
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
