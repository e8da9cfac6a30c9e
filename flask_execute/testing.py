"""Helpers for testing plugins.

:func:`plugin_registered` registers a plugin on one application's plugin manager for the
duration of a ``with`` block (or a pytest fixture) and always unregisters it::

    from flask_execute.testing import plugin_registered

    def test_my_plugin(app):
        with plugin_registered(app, MyPlugin()):
            assert celery.submit(add, 1, 2).result(timeout=5) == 3

It serves the hooks called after ``init_app`` (sending, running, futures, local
services, scheduling); a plugin whose configuration hooks matter must be given to
``Celery(app, plugins=[...])`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from flask_execute.runtime import AppState

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["plugin_registered"]

_P = TypeVar("_P")


@contextmanager
def plugin_registered(app: Flask, plugin: _P, name: str | None = None) -> Iterator[_P]:
    """Register ``plugin`` for ``app`` while the block runs.

    :param app: a Flask application registered with the extension.
    :param plugin: a module or object with hook implementations.
    :param name: its registration name (default: pluggy's choice).
    :raises ValueError: the name is blocked (``CELERY_DISABLED_PLUGINS``) or taken.
    :raises pluggy.PluginValidationError: an implementation matches no hook.

    The plugin is unregistered when the block ends, however it ends.
    """
    pm = AppState.of(app).pm
    if pm.register(plugin, name=name) is None:
        raise ValueError(f"plugin name {name!r} is blocked for {app.name!r}")
    try:
        pm.check_pending()
        yield plugin
    finally:
        pm.unregister(plugin)
