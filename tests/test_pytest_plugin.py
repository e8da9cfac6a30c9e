"""The pytest plugin: its fixtures in users' own test sessions, run in a subprocess.

Each session runs the way a user's does (``pytest`` in a project folder, the plugin
found through its ``pytest11`` entry point) against this run's Redis database. The
processes it starts carry this run's marker, so the orphan check sees any it leaves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from flask import Flask

import flask_execute
from flask_execute import ConfigurationError
from flask_execute.testing import eager
from tests import helpers
from tests.apps import factory_overrides

pytestmark = pytest.mark.timeout(240)

#: A factory app whose own default broker is dead: only the test's config can work.
TINY = """
import os

from flask import Flask, current_app

from flask_execute import Celery

celery = Celery()


def create_app(config=None):
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="tiny-default-secret-key-of-32-bytes!",
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        CELERY_FLOWER=False,
    )
    app.config.update(config or {})
    celery.init_app(app)
    return app


def read(key):
    return current_app.config.get(key)
"""

#: The same app, but a worker that loads it never gets ready.
HANGING = (
    TINY
    + """
if os.environ.get("FLASK_EXECUTE_WORKER") == "1":
    import threading

    threading.Event().wait()
"""
)

CONFTEST = """
import os

import pytest

import tiny


@pytest.fixture
def app(tmp_path):
    return tiny.create_app(
        {
            "SECRET_KEY": "the-session-secret-key-of-32-bytes!!",
            "CELERY_BROKER_URL": os.environ["TINY_BROKER"],
            "CELERY_LOG_DIR": str(tmp_path),
            "ONLY_HERE": "from the test",
        }
    )
"""


def run_pytest(folder: Path, broker_url: str, *args: str) -> str:
    """Run ``pytest`` in ``folder`` (its own rootdir and ini); return its output."""
    env = helpers.test_env(TINY_BROKER=broker_url, GREETER_TEST_BROKER=broker_url)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    _, out, _ = helpers.run_to_end(
        [*command, "--rootdir", str(folder), *args], folder, env, 180, merge=True
    )
    return out


def project(folder: Path, app: str, tests: str, ini: str = "") -> Path:
    folder.mkdir()
    (folder / "tiny.py").write_text(app)
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_tiny.py").write_text(textwrap.dedent(tests))
    (folder / "pytest.ini").write_text("[pytest]\n" + ini)
    return folder


def test_the_testing_example_passes(broker_url: str, tmp_path: Path) -> None:
    folder = helpers.ROOT / "examples" / "testing"
    out = run_pytest(folder, broker_url, "-c", str(project_ini(tmp_path)))
    assert "4 passed" in out, out


def project_ini(tmp_path: Path) -> Path:
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    return ini


def test_a_failing_test_still_stops_its_worker(broker_url: str, tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    tests = f"""
    import json
    from pathlib import Path

    import tiny

    PIDS = Path({str(pids)!r})


    def record(celery):
        known = json.loads(PIDS.read_text()) if PIDS.exists() else []
        PIDS.write_text(json.dumps(known + list(celery.processes.values())))


    def test_eager(execute_eager):
        assert execute_eager.submit(tiny.read, "ONLY_HERE").result() == "from the test"
        assert execute_eager.processes == {{}}


    def test_fails_with_its_worker_running(execute_worker):
        record(execute_worker)
        assert execute_worker.submit(tiny.read, "ONLY_HERE").result(30) == "from the test"
        assert False, "fails on purpose"


    def test_a_second_test_gets_a_worker_too(execute_worker):
        record(execute_worker)  # celery#5105: the second test of a session hung
        assert execute_worker.submit(tiny.read, "ONLY_HERE").result(30) == "from the test"
    """
    out = run_pytest(project(tmp_path / "project", TINY, tests), broker_url)
    assert "1 failed, 2 passed" in out, out
    assert "fails on purpose" in out
    started = json.loads(pids.read_text())
    assert len(started) == 2 and len(set(started)) == 2, started
    assert [pid for pid in started if psutil.pid_exists(pid)] == []


def test_a_worker_that_never_gets_ready_fails_its_test_within_the_bound(
    broker_url: str, tmp_path: Path
) -> None:
    tests = """
    import tiny


    def test_needs_a_worker(execute_worker):
        execute_worker.submit(tiny.read, "ONLY_HERE").result(30)


    def test_the_session_goes_on(execute_eager):
        assert execute_eager.submit(tiny.read, "ONLY_HERE").result() == "from the test"
    """
    folder = project(tmp_path / "project", HANGING, tests, ini="execute_worker_timeout = 3\n")
    out = run_pytest(folder, broker_url)
    assert "1 passed, 1 error" in out, out
    assert "was not ready within 3s" in out, out


def test_a_bad_timeout_option_names_it(broker_url: str, tmp_path: Path) -> None:
    tests = """
    def test_needs_a_worker(execute_worker):
        pass
    """
    folder = project(tmp_path / "project", TINY, tests, ini="execute_worker_timeout = soon\n")
    out = run_pytest(folder, broker_url)
    assert "execute_worker_timeout must be a number of seconds, not 'soon'" in out, out


def test_eager_restores_the_mode_and_refuses_a_blocked_plugin(tmp_path: Path) -> None:
    config = {"CELERY_START_LOCAL_WORKERS": False, "ONLY_HERE": "here"}
    app = factory_overrides.create_app(config)
    state = app.extensions["flask_execute"]
    assert state.eager is False
    with pytest.raises(RuntimeError, match="on purpose"), eager(app) as celery:
        assert state.eager is True
        assert celery.submit(factory_overrides.read_key, "ONLY_HERE").result() == "here"
        raise RuntimeError("on purpose")
    assert state.eager is False
    blocked = factory_overrides.create_app({**config, "CELERY_DISABLED_PLUGINS": ["eager"]})
    with pytest.raises(ConfigurationError, match="'eager' plugin is blocked"):
        with eager(blocked):
            pass


def test_importing_the_plugin_imports_neither_flask_nor_celery() -> None:
    code = (
        "import sys, flask_execute.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'celery', 'kombu')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=helpers.test_env(), capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_public_name_is_lazy_and_listed() -> None:
    lazy = flask_execute._LAZY  # type: ignore[attr-defined]
    assert sorted([*lazy, "__version__"]) == sorted(flask_execute.__all__)  # one eager
    for name, module in lazy.items():
        value = getattr(flask_execute, name)
        assert value is getattr(sys.modules[module], name)
    assert flask_execute.Celery is factory_overrides.Celery
    assert isinstance(factory_overrides.create_app({}), Flask)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        flask_execute.nothing  # noqa: B018
