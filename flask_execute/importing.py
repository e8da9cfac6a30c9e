"""Work started while the app's module is being imported, which a worker repeats.

A worker loads the Flask app by importing its module, so whatever that module does at
import time runs again in every worker. A script without an
``if __name__ == "__main__":`` guard would have each worker submit its own copies of
the script's work (and try to start services), and leave them in the queue when it
fails. Two checks refuse that, naming the guard:

* in a process loading the app to serve it (:func:`loading`), a send or a start of
  local services raises (:func:`refuse_while_loading`);
* a script run as ``python app.py`` that starts local services from its top-level code,
  outside the guard, is told so before anything starts (:func:`refuse_unguarded`).
"""

from __future__ import annotations

import ast
import contextlib
import sys
from collections.abc import Iterator
from functools import lru_cache
from types import FrameType

from flask_execute.errors import ConfigurationError

_GUARD = 'if __name__ == "__main__":'

#: Import paths of the apps this process is loading right now (nested loads stack).
_LOADING: list[str] = []


@contextlib.contextmanager
def loading(import_path: str | None) -> Iterator[None]:
    """Mark this process as importing the app at ``import_path`` to serve it."""
    _LOADING.append(import_path or "the app")
    try:
        yield
    finally:
        _LOADING.pop()


def refuse_while_loading(action: str) -> None:
    """Raise if this process is importing the app it serves: ``action`` (``"submits
    work"``, ``"starts local services"``) would run in every worker that loads it."""
    if _LOADING:
        raise ConfigurationError(
            f"{_LOADING[-1]} {action} while a worker imports it to load the app: every "
            f"worker would do it again. Put that code under `{_GUARD}` (or in a function "
            "or command that runs only when asked), so that importing the app only "
            "builds it."
        )


def refuse_unguarded(import_name: str, action: str) -> None:
    """Raise if the script run as ``__main__`` (an app with ``import_name`` "__main__")
    does ``action`` from its top-level code outside an ``if __name__ == "__main__":``
    block: each local worker imports the script and would do it again."""
    if import_name != "__main__":
        return
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame = _top_level_frame(vars(main)) if main is not None else None
    if frame is None or not path or frame.f_code.co_filename != path:
        return
    line = frame.f_lineno
    if not any(start <= line <= end for start, end in _guarded_lines(path)):
        raise ConfigurationError(
            f"{path}, line {line}, {action} when the script is imported, outside "
            f"`{_GUARD}`: every local worker imports {path} to load the app and would "
            f"run that line too. Move it under `{_GUARD}`."
        )


def _top_level_frame(namespace: dict[str, object]) -> FrameType | None:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is namespace and frame.f_code.co_name == "<module>":
            return frame
        frame = frame.f_back
    return None


@lru_cache(maxsize=8)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...]:
    """The line ranges of the script's top-level ``if __name__ == "__main__":`` blocks."""
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError):
        return ((0, sys.maxsize),)  # cannot tell: never refuse
    ranges = []
    for node in tree.body:
        if isinstance(node, ast.If) and _is_guard(node.test):
            ranges.append((node.lineno, node.end_lineno or node.lineno))
    return tuple(ranges)


def _is_guard(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    values = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(values) == 1
