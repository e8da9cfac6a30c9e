"""Shared fixtures: a Redis database per run, real workers, no orphans.

The run's Redis database is claimed in ``pytest_configure`` and published as
``FLASK_EXECUTE_TEST_BROKER`` before any test module (or test app) is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests import helpers

_DB: list[int] = []


def pytest_configure(config: pytest.Config) -> None:
    db = helpers.allocate_redis_db()
    _DB.append(db)
    os.environ["FLASK_EXECUTE_TEST_BROKER"] = (
        f"redis://{helpers.REDIS_HOST}:{helpers.REDIS_PORT}/{db}"
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    for db in _DB:
        helpers.release_redis_db(db)


@pytest.fixture(scope="session")
def redis_db() -> int:
    return _DB[0]


@pytest.fixture(scope="session")
def broker_url() -> str:
    return os.environ["FLASK_EXECUTE_TEST_BROKER"]


@pytest.fixture(scope="session")
def session_pids() -> set[int]:
    """Pids of session-scoped processes, exempt from the per-test orphan check."""
    return set()


@pytest.fixture(scope="session")
def basic_app() -> ModuleType:
    import tests.apps.basic as module

    return module


@pytest.fixture(scope="session")
def basic_worker(
    basic_app: ModuleType,
    broker_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    session_pids: set[int],
) -> Iterator[object]:
    """One real worker (prefork, 2 processes) serving ``tests.apps.basic``."""
    log = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    app = basic_app.celery.celery_app
    with helpers.session_worker(
        "tests.apps.basic:app", app, broker_url, log, session_pids, name="basic", queues="basic"
    ) as proc:
        yield proc


@pytest.fixture
def celery(basic_app: ModuleType, basic_worker: object) -> object:
    """The extension of ``tests.apps.basic``, its worker running (a module that needs
    another ``celery`` defines its own)."""
    return basic_app.celery


@pytest.fixture
def m(basic_app: ModuleType) -> ModuleType:
    """``tests.apps.basic``: the functions the worker tests submit."""
    return basic_app


@pytest.fixture(autouse=True)
def no_orphans(session_pids: set[int]) -> Iterator[None]:
    """After every test, no process this run started may survive (session ones aside)."""
    yield
    allowed = helpers.family_pids(session_pids)

    def clean() -> bool:
        return not helpers.marked_processes(exclude=allowed)

    try:
        helpers.wait_for(clean, timeout=10, interval=0.1, message="no orphan processes")
    except AssertionError:
        left = helpers.marked_processes(exclude=allowed)
        desc = [(p.pid, " ".join(p.cmdline())[:120]) for p in left]
        for p in left:
            helpers.stop_process_tree(p)
        pytest.fail(f"processes left behind: {desc}")


@pytest.fixture
def gate(broker_url: str) -> Iterator[tuple[object, str]]:
    """``(release, key)``: a key a gated task waits for (``blpop``) in the run's Redis
    database, and the function that releases it; released at the end whatever
    happened, so no gated task outlives its test."""
    import uuid

    import redis

    client = redis.Redis.from_url(broker_url)
    key = f"release-{uuid.uuid4().hex}"
    yield (lambda: client.rpush(key, "go")), key
    client.rpush(key, "go")
    client.close()
