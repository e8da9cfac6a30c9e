"""pytest fixtures for the tests of applications that use flask_execute.

Installed with the package (entry point ``pytest11``), so there is nothing to enable.
Both fixtures take the test's own ``app`` fixture, the Flask application under test
(the pytest-flask convention), and run the test inside an application context of it:

``execute_eager``
    the app's extension in eager mode: every call runs in-process, at once
    (:func:`flask_execute.testing.eager`); mode restored afterwards.
``execute_worker``
    the app's extension with its own local workers running, real processes serving
    this very app, the test's config overrides included
    (:func:`flask_execute.testing.local_services`). The start is bounded: a worker not
    ready within ``CELERY_START_TIMEOUT`` (or the ``execute_worker_timeout`` ini
    option) fails the test with the worker's last log lines instead of hanging the
    session; when the test ends, passed or failed, every process is stopped.

Importing this module costs nothing more than pytest itself: Flask and Celery are
imported when a fixture is first used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flask import Flask

    from flask_execute.extension import Celery

_TIMEOUT_INI = "execute_worker_timeout"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _TIMEOUT_INI,
        "seconds the execute_worker fixture's workers get to be ready "
        "(default: the app's CELERY_START_TIMEOUT)",
        default="",
    )


@pytest.fixture
def execute_eager(app: Flask) -> Iterator[Celery]:
    """The extension of the test's ``app`` in eager mode: calls run in-process."""
    # Imported here, not at the top: the plugin loads in every test session.
    from flask_execute.testing import eager

    with eager(app) as celery:
        yield celery


@pytest.fixture
def execute_worker(request: pytest.FixtureRequest, app: Flask) -> Iterator[Celery]:
    """The extension of the test's ``app``, its local workers running for the test."""
    from flask_execute.testing import local_services

    value = str(request.config.getini(_TIMEOUT_INI) or "").strip()
    try:
        timeout = float(value) if value else None
    except ValueError:
        raise pytest.UsageError(
            f"{_TIMEOUT_INI} must be a number of seconds, not {value!r}"
        ) from None
    with local_services(app, timeout=timeout) as celery:
        yield celery
