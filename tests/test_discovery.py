"""Workers load the very same app: a module, a factory, or a script run as python app.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flask import Flask

from flask_execute import Celery, ConfigurationError
from flask_execute.discovery import app_import_path
from tests import helpers

pytestmark = pytest.mark.timeout(90)

SCRIPT = helpers.ROOT / "tests" / "apps" / "script" / "app.py"


def test_import_path_of_a_module_app(basic_app, monkeypatch):
    monkeypatch.delenv("FLASK_APP", raising=False)
    assert app_import_path(basic_app.app) == "tests.apps.basic:app"
    monkeypatch.setenv("FLASK_APP", "elsewhere:make()")
    assert app_import_path(basic_app.app) == "elsewhere:make()"


def test_import_path_fails_clearly_when_undiscoverable(monkeypatch):
    monkeypatch.delenv("FLASK_APP", raising=False)
    app = Flask("no_such_module_anywhere")
    with pytest.raises(ConfigurationError, match="FLASK_APP"):
        app_import_path(app)
    Celery  # noqa: B018 - imported for the error's type only


def test_script_app_functions_from_main_reach_a_worker(tmp_path, broker_url):
    log = tmp_path / "worker.log"
    worker = helpers.start_worker(str(SCRIPT), broker_url, log, name="script@%h", queues="script")
    try:
        from celery import Celery as RawCelery

        probe = RawCelery(broker=broker_url)
        helpers.wait_worker_ready(probe, worker, log, name_prefix="script@")
        out = subprocess.run(
            [sys.executable, str(SCRIPT)],
            env=helpers.test_env(),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr + log.read_text()
        lines = out.stdout.splitlines()
        assert lines[0] == f"PATH {SCRIPT}:app"
        assert lines[1:] == ["RESULT 49", "RESULT 5.0", "RESULT [1, 4, 9]"]
    finally:
        helpers.stop_process_tree(worker)
