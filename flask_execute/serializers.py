"""The serializer protocol plugins implement (``flask_execute_make_serializer``)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Serializer(Protocol):
    """Turns Python objects into bytes and back.

    The core signs ``dumps`` output and verifies it before ``loads``, so ``loads`` only
    ever sees bytes this application produced.
    """

    #: Short name, part of the signed data: a payload made by one serializer is never
    #: handed to another.
    name: str

    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj``; raise any exception when it cannot be serialized."""

    def loads(self, data: bytes) -> Any:
        """Rebuild an object from ``dumps`` output."""
