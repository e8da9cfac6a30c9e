"""Factory overrides reach the services the app starts (the config snapshot)."""

from __future__ import annotations

import logging
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from flask import Flask

from flask_execute import ConfigurationError
from flask_execute import config_snapshot as snapshots
from flask_execute.config_snapshot import SNAPSHOT_ENV
from tests.apps import factory_overrides

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Flask]]:
    """Apps made by the test; their local services always stop."""
    monkeypatch.delenv("FLASK_APP", raising=False)
    monkeypatch.delenv("FLASK_EXECUTE_APP", raising=False)
    apps: list[Flask] = []
    yield apps
    for app in apps:
        with app.app_context():
            factory_overrides.celery.stop(timeout=10)


def overrides(broker_url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {
        "TESTING": True,
        "SECRET_KEY": f"the-test-secret-key-{tag}-of-32-bytes",
        "CELERY_BROKER_URL": broker_url,
        "CELERY_LOG_DIR": str(tmp_path / "logs"),
        "CELERY_TASK_DEFAULT_QUEUE": f"overrides-{tag}",
        "CELERY_WORKERS": [f"over{tag}"],
        **extra,
    }


def test_factory_overrides_reach_a_self_started_worker(made, broker_url, tmp_path):
    app = factory_overrides.create_app(overrides(broker_url, tmp_path, ONLY_IN_OVERRIDE="yes"))
    made.append(app)
    app.config["GREETING"] = "set after the factory returned"
    celery = factory_overrides.celery
    with app.app_context():
        # Its own default broker is dead: only the override's broker and key can work.
        assert celery.submit(factory_overrides.read_key, "ONLY_IN_OVERRIDE").result(30) == "yes"
        assert celery.submit(factory_overrides.read_key, "GREETING").result(30) == (
            "set after the factory returned"
        )
        assert celery.submit(factory_overrides.read_key, "TESTING").result(30) is True
        assert celery.submit(factory_overrides.pid).result(30) != os.getpid()
        (pid,) = celery.processes.values()
    path = Path(psutil.Process(pid).environ()[SNAPSHOT_ENV])
    assert path.name == "config.pickle"
    assert not path.exists() and not path.parent.exists()  # gone once the worker was ready


def test_snapshot_is_owner_only_and_applied_to_the_same_app(monkeypatch, caplog):
    app = Flask("tests.apps.factory_overrides")
    app.config.update(SECRET_KEY="k" * 32, ONLY_HERE=[1, 2], A_LOCK=threading.Lock())
    with caplog.at_level(logging.DEBUG, logger="flask_execute"):
        path = snapshots.write(app)
    assert "A_LOCK is not carried" in caplog.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.parent.stat().st_uid == os.geteuid()

    monkeypatch.setenv(SNAPSHOT_ENV, str(path))
    other = Flask("another_app")
    assert snapshots.apply(other) is False
    assert "ONLY_HERE" not in other.config
    same = Flask("tests.apps.factory_overrides")
    same.config["A_LOCK"] = "its own"
    assert snapshots.apply(same) is True
    assert same.config["ONLY_HERE"] == [1, 2] and same.config["SECRET_KEY"] == "k" * 32
    assert same.config["A_LOCK"] == "its own"
    assert not path.exists()  # read once, removed at once
    again = Flask("tests.apps.factory_overrides")
    assert snapshots.apply(again) is True  # the factory's second application, from memory
    assert again.config["ONLY_HERE"] == [1, 2]


def test_a_snapshot_others_may_read_is_refused(monkeypatch):
    path = snapshots.write(Flask("tests.apps.factory_overrides"))
    try:
        path.chmod(0o644)
        monkeypatch.setenv(SNAPSHOT_ENV, str(path))
        with pytest.raises(ConfigurationError, match=f"{SNAPSHOT_ENV}: refusing .*0600"):
            snapshots.apply(Flask("tests.apps.factory_overrides"))
    finally:
        snapshots.remove(path)
    assert not path.parent.exists()


def test_a_snapshot_that_is_gone_leaves_the_app_its_own_config(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path / "gone" / "config.pickle"))
    app = Flask("tests.apps.factory_overrides")
    app.config["OWN"] = 1
    assert snapshots.apply(app) is False
    assert app.config["OWN"] == 1
    assert "which is gone" in caplog.text
