"""Default plugin ``cloudpickle``: serializes functions by value when they need it.

cloudpickle handles functions defined in ``__main__``, lambdas, closures and nested
functions; module-level functions travel by reference and are imported by the worker.
Context proxies (``current_app``, ``g``, ``request``, ``session``, ``current_task``)
that such a function references travel by name, so on the worker they resolve to the
worker's own context, as the usage guide promises.
"""

from __future__ import annotations

import functools
import importlib
import io
import pickle
from typing import TYPE_CHECKING, Any

import cloudpickle
from werkzeug.local import LocalProxy

from flask_execute.markers import hookimpl

if TYPE_CHECKING:
    from flask import Flask

#: Proxies pickled by name: (module, attribute).
PROXIES = (
    ("flask", "current_app"),
    ("flask", "g"),
    ("flask", "request"),
    ("flask", "session"),
    ("flask_execute", "current_task"),
)


def import_attribute(module: str, name: str) -> Any:
    """Return ``module.name`` (how a proxy is rebuilt on the other side)."""
    return getattr(importlib.import_module(module), name)


@functools.cache
def _proxy_names() -> dict[int, tuple[str, str]]:
    return {id(import_attribute(m, n)): (m, n) for m, n in PROXIES}


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is LocalProxy:
            where = _proxy_names().get(id(obj))
            if where is None:
                raise pickle.PicklingError(
                    "a context proxy (werkzeug LocalProxy) cannot be pickled: resolve it "
                    "inside the function instead of capturing it"
                )
            return import_attribute, where
        return super().reducer_override(obj)


class CloudpickleSerializer:
    """:class:`~flask_execute.serializers.Serializer` built on cloudpickle."""

    name = "cloudpickle"

    def dumps(self, obj: Any) -> bytes:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        return buffer.getvalue()

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


@hookimpl(trylast=True)
def flask_execute_make_serializer(app: Flask) -> CloudpickleSerializer:
    return CloudpickleSerializer()
