"""Helpers for tests: eager mode, real local services, plugins, each for one block.

:func:`eager` runs an application's tasks in-process while a ``with`` block runs (the
``execute_eager`` fixture of the pytest plugin uses it)::

    from flask_execute.testing import eager

    def test_add(app):
        with eager(app) as celery:
            assert celery.submit(add, 1, 2).result() == 3

:func:`local_services` runs an application's own local workers (with its very config,
factory overrides included) while a block runs; the ``execute_worker`` fixture uses it.

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

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from flask_execute.errors import ConfigurationError, ServiceError
from flask_execute.runtime import AppState

if TYPE_CHECKING:
    from flask import Flask

    from flask_execute.extension import Celery

__all__ = ["eager", "local_services", "plugin_registered"]

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


@contextmanager
def eager(app: Flask) -> Iterator[Celery]:
    """Run ``app``'s tasks in-process (Celery's ``task_always_eager``) while the block
    runs, inside an application context of ``app``; yield its extension.

    Nothing is published and no service starts; every call still goes through the
    serializer, so what could not reach a worker fails here too. The previous mode is
    restored when the block ends, however it ends.

    :param app: a Flask application registered with the extension.
    :raises ConfigurationError: the ``eager`` plugin is blocked
        (``CELERY_DISABLED_PLUGINS``): nothing would run the tasks.

    .. versionadded:: 0.2
    """
    state = AppState.of(app)
    if state.pm.is_blocked("eager"):
        raise ConfigurationError(
            f"eager({app.name!r}): the 'eager' plugin is blocked by CELERY_DISABLED_PLUGINS, "
            "so nothing would run tasks in-process; remove it from there"
        )
    conf = state.celery_app.conf
    before = conf.task_always_eager
    conf.task_always_eager = True
    try:
        with app.app_context():
            yield state.extension
    finally:
        conf.task_always_eager = before


#: Seconds :func:`local_services` waits, beyond the start's own bounds, before it gives
#: up on a start that hangs (and kills what it spawned).
HANG_GRACE = 5.0


@contextmanager
def local_services(
    app: Flask, timeout: float | None = None, stop_timeout: float | None = None
) -> Iterator[Celery]:
    """Start ``app``'s local services (its ``CELERY_WORKERS``, flower and beat as
    configured) for the block, inside an application context of ``app``; yield its
    extension. They serve this very app: its config reaches them whatever way the app
    was built (see :mod:`flask_execute.config_snapshot`).

    :param timeout: seconds the services get to be ready (default
        ``CELERY_START_TIMEOUT``). A start that has not returned within twice that
        plus :data:`HANG_GRACE` is given up: what it spawned is killed.
    :param stop_timeout: seconds running tasks get when the block ends (default
        ``CELERY_STOP_TIMEOUT``); then they are cancelled, and killed.
    :raises ServiceError: a service exited or was not ready in time (its log's last
        lines in the message), or no plugin runs local services; nothing is left
        running.

    The services stop when the block ends, however it ends.

    .. versionadded:: 0.2
    """
    state = AppState.of(app)
    supervisor = state.supervisor
    if supervisor is None:
        raise ServiceError(
            f"local_services({app.name!r}): local services are off (the 'services' "
            "plugin is blocked by CELERY_DISABLED_PLUGINS)"
        )
    bound = float(app.config["CELERY_START_TIMEOUT"]) if timeout is None else timeout
    failed: list[BaseException] = []

    def start() -> None:
        try:
            with app.app_context():
                supervisor.start(bound)
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    # The start runs in a thread so that not even a broker that never answers can
    # hold the caller (a test session) past the bound.
    thread = threading.Thread(target=start, name="flask_execute-local-services", daemon=True)
    thread.start()
    thread.join(2 * bound + HANG_GRACE)
    if thread.is_alive():
        for process in supervisor.running().values():
            process.kill()
        raise ServiceError(
            f"the local services of {app.name!r} did not start within {2 * bound + HANG_GRACE:g}s"
            f" (CELERY_START_TIMEOUT is {bound:g}s); what was started is killed; logs: "
            f"{supervisor.log_paths()}"
        )
    if failed:
        raise failed[0]
    try:
        with app.app_context():
            yield state.extension
    finally:
        supervisor.stop(stop_timeout)
