"""The ``flask celery`` CLI, run as real subprocesses against real workers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from flask_execute import cli
from tests import helpers

pytestmark = pytest.mark.timeout(120)

BIN = Path(sys.executable).parent
FLASK = helpers.FLASK
CELERY = str(BIN / "celery")
WORKER_OPTS = ["-c", "1", "--without-gossip", "--without-mingle", "-l", "info"]


run = helpers.run_command


def start(args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    return helpers.spawn(args, env=helpers.test_env(**env), log=log)


def wait_node(celery_app, proc, log: Path, prefix: str) -> str:
    """Wait until a worker whose name starts with ``prefix`` answers; return its name."""
    helpers.wait_worker_ready(celery_app, proc, log, name_prefix=prefix)
    replies = celery_app.control.ping(timeout=1) or []
    return next(name for reply in replies for name in reply if name.startswith(prefix))


@pytest.fixture(scope="module")
def cli_app():
    import tests.apps.cli_app as module

    return module


@pytest.fixture(scope="module")
def factory_app():
    import tests.apps.cli_factory as module

    return module.create_app()


# -- no worker needed ------------------------------------------------------------------


def test_group_help_lists_our_commands_and_celerys():
    out = run([FLASK, "celery", "--help"], FLASK_APP="tests.apps.cli_app")
    assert out.returncode == 0, out.stderr
    for name in ("cluster", "status", "worker", "beat", "flower", "inspect", "control", "purge"):
        assert f"\n  {name} " in out.stdout, name


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_of_a_passed_through_command_is_celerys(flag):
    out = run([FLASK, "celery", "worker", flag], FLASK_APP="tests.apps.cli_app")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: flask celery worker [OPTIONS]")
    assert "--concurrency" in out.stdout and "--queues" in out.stdout
    out = run([FLASK, "celery", "inspect", flag], FLASK_APP="tests.apps.cli_app")
    assert "Usage: flask celery inspect [OPTIONS] COMMAND" in out.stdout


def test_flower_is_passed_through():
    out = run([FLASK, "celery", "flower", "--help"], FLASK_APP="tests.apps.cli_app")
    assert out.returncode == 0, out.stderr
    assert "Usage: flask celery flower" in out.stdout


def test_help_works_without_an_app(tmp_path):
    out = subprocess.run(
        [FLASK, "celery", "beat", "--help"],
        env=helpers.test_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Usage: flask celery beat [OPTIONS]" in out.stdout


def test_an_app_without_the_extension_gets_a_clear_error():
    out = run([FLASK, "celery", "inspect", "ping"], FLASK_APP="tests.apps.cli_plain")
    assert out.returncode != 0
    assert "does not use flask_execute" in out.stderr
    assert "Celery(app)" in out.stderr


def test_status_with_no_worker_fails_with_the_celery_exit_code():
    out = run(
        [FLASK, "celery", "status", "-d", "nobody@nowhere", "-t", "0.2"],
        FLASK_APP="tests.apps.cli_app",
    )
    assert out.returncode == cli.EX_UNAVAILABLE
    assert "0 nodes online." in out.stdout
    assert "no worker replied" in out.stderr


def test_beat_and_worker_get_the_apps_defaults(tmp_path):
    from flask import Flask

    from flask_execute import Celery
    from flask_execute.beat import SCHEDULER

    app = Flask("cli_defaults")
    app.config.update(
        CELERY_LOG_DIR=str(tmp_path), CELERY_LOG_LEVEL="warning", CELERY_FLOWER_PORT=5599
    )
    celery_app = Celery(app).celery_app
    commands = cli._celery_cli().commands
    # beat's scheduler and state file are Celery settings: any beat command finds them
    assert celery_app.conf.beat_scheduler == SCHEDULER
    assert celery_app.conf.beat_schedule_filename == str(
        tmp_path / f"celerybeat-schedule-{celery_app.main}"
    )
    # options Celery parses get click defaults: what the user types still wins
    assert cli._defaults(app, "beat", commands["beat"], []) == ({"loglevel": "warning"}, [])
    assert cli._defaults(app, "worker", commands["worker"], ["-l", "info"]) == (
        {"loglevel": "warning"},
        [],
    )
    assert cli._defaults(app, "inspect", commands["inspect"], ["ping"]) == ({}, [])
    # flower parses its own options: ours are added unless given
    _, extra = cli._defaults(app, "flower", commands["flower"], [])
    assert extra == ["--port=5599", "--address=127.0.0.1"]
    _, extra = cli._defaults(app, "flower", commands["flower"], ["--port=1"])
    assert extra == ["--address=127.0.0.1"]


def test_remote_command_is_the_first_positional():
    assert cli._remote_command(["shutdown"]) == "shutdown"
    assert cli._remote_command(["-d", "a@b", "-t", "2", "shutdown"]) == "shutdown"
    assert cli._remote_command(["--destination=a@b", "pool_grow", "2"]) == "pool_grow"
    assert cli._remote_command(["-j"]) is None


# -- real workers ----------------------------------------------------------------------


def test_worker_inspect_status_and_control_shutdown(cli_app, tmp_path):
    """The guide's commands, each a real `flask celery ...` process (FLASK_APP=module)."""
    log = tmp_path / "worker.log"
    worker = start(
        [FLASK, "celery", "worker", "-n", "clifoo@%h", "-Q", "cli-foo", *WORKER_OPTS],
        log,
        FLASK_APP="tests.apps.cli_app",
    )
    try:
        name = wait_node(cli_app.celery.celery_app, worker, log, "clifoo@")
        assert "[queues]" in log.read_text() and "cli-foo" in log.read_text()

        # the worker runs tasks of the app, marked as a worker process
        with cli_app.app.app_context():
            future = cli_app.celery.submit(cli_app.worker_env, queue="cli-foo")
            assert future.result(timeout=30) == "1"

        out = run([FLASK, "celery", "inspect", "ping", "-d", name], FLASK_APP="tests.apps.cli_app")
        assert out.returncode == 0, out.stderr
        assert f"{name}: OK" in out.stdout and "pong" in out.stdout

        out = run(
            [FLASK, "celery", "inspect", "stats", "-d", name, "-j"], FLASK_APP="tests.apps.cli_app"
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)[name]["pool"]["max-concurrency"] == 1

        out = run([FLASK, "celery", "status"], FLASK_APP="tests.apps.cli_app")
        assert out.returncode == 0, out.stderr
        assert f"-> {name}: OK" in out.stdout
        assert "online." in out.stdout

        out = run([FLASK, "celery", "status", "-j", "-d", name], FLASK_APP="tests.apps.cli_app")
        assert json.loads(out.stdout) == {name: "OK"}

        out = run(
            [FLASK, "celery", "control", "pool_grow", "1", "-d", name],
            FLASK_APP="tests.apps.cli_app",
        )
        assert out.returncode == 0, out.stderr
        assert "pool will grow" in out.stdout

        out = run(
            [FLASK, "celery", "control", "shutdown", "-d", name], FLASK_APP="tests.apps.cli_app"
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"-> {name}: OK" in out.stdout and "shutdown requested" in out.stdout
        assert worker.wait(timeout=30) == 0, log.read_text()
    finally:
        helpers.stop_process_tree(worker)


def test_factory_app_through_flask_app_and_dash_dash_app(factory_app, tmp_path):
    """`flask --app pkg.module:create_app celery worker`, then FLASK_APP=... for inspect."""
    from flask_execute.discovery import celery_app_of

    celery_app = celery_app_of(factory_app)
    log = tmp_path / "worker.log"
    worker = start(
        [
            FLASK,
            "--app",
            "tests.apps.cli_factory:create_app",
            "celery",
            "worker",
            "-n",
            "clifactory@%h",
            "-Q",
            "cli-factory",
            *WORKER_OPTS,
        ],
        log,
    )
    try:
        name = wait_node(celery_app, worker, log, "clifactory@")
        out = run(
            [FLASK, "celery", "inspect", "registered", "-d", name],
            FLASK_APP="tests.apps.cli_factory:create_app",
        )
        assert out.returncode == 0, out.stderr
        assert "flask_execute.run" in out.stdout
        import tests.apps.cli_factory as module

        with factory_app.app_context():
            future = module.celery.submit(module.marker)
            assert future.result(timeout=30) == "cli-factory"
            assert module.celery.control.shutdown(destination=[name], timeout=5) == {
                name: {"ok": "shutdown requested"}
            }
        assert worker.wait(timeout=30) == 0, log.read_text()
    finally:
        helpers.stop_process_tree(worker)


def test_celery_dash_a_flask_execute_celery_with_a_factory(factory_app, tmp_path):
    """`FLASK_APP="app:create_app" celery -A flask_execute.celery worker --loglevel=info`."""
    from flask_execute.discovery import celery_app_of

    celery_app = celery_app_of(factory_app)
    log = tmp_path / "worker.log"
    worker = start(
        [
            CELERY,
            "-A",
            "flask_execute.celery",
            "worker",
            "--loglevel=info",
            "-n",
            "clidirect@%h",
            "-Q",
            "cli-direct",
            "-c",
            "1",
            "--without-gossip",
            "--without-mingle",
        ],
        log,
        FLASK_APP="tests.apps.cli_factory:create_app",
    )
    try:
        name = wait_node(celery_app, worker, log, "clidirect@")
        out = run(
            [
                FLASK,
                "--app",
                "tests.apps.cli_factory:create_app",
                "celery",
                "control",
                "shutdown",
                "-d",
                name,
            ]
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert worker.wait(timeout=30) == 0, log.read_text()
    finally:
        helpers.stop_process_tree(worker)


def test_cluster_runs_the_services_until_sigint(tmp_path):
    import tests.apps.cli_cluster as module

    logs = tmp_path / "logs"
    out = tmp_path / "cluster.out"
    proc = start(
        [FLASK, "celery", "cluster"],
        out,
        FLASK_APP="tests.apps.cli_cluster",
        CLI_TEST_LOG_DIR=str(logs),
    )
    try:
        name = wait_node(module.celery.celery_app, proc, out, "clicluster@")
        # the worker's log lines reach the cluster's output with the service's prefix
        helpers.wait_for(
            lambda: f"{name} ready" in out.read_text(), timeout=30, message="worker ready line"
        )
        line = next(ln for ln in out.read_text().splitlines() if f"{name} ready" in ln)
        with module.app.app_context():
            services = list(module.celery.logs)
        assert any(line.startswith(f"[{service}] ") for service in services), (line, services)
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        assert len(family) > 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, out.read_text()
        gone, alive = psutil.wait_procs(family, timeout=15)
        assert not alive, [p.pid for p in alive]
        assert "Stopping services" in out.read_text()
    finally:
        helpers.stop_process_tree(proc)


def test_beat_runs_the_locked_scheduler_with_its_file_in_the_log_dir(tmp_path):
    logs = tmp_path / "logs"
    out = tmp_path / "beat.out"
    proc = start(
        [FLASK, "celery", "beat", "-l", "info"],
        out,
        FLASK_APP="tests.apps.cli_cluster",
        CLI_TEST_LOG_DIR=str(logs),
    )
    try:
        helpers.wait_for(
            lambda: "beat: Starting" in out.read_text() or proc.poll() is not None,
            timeout=30,
            message="beat started",
        )
        text = out.read_text()
        assert proc.poll() is None, text
        assert f"db -> {logs}/celerybeat-schedule-" in text
        assert "flask_execute.beat.LockedScheduler" in text
    finally:
        helpers.stop_process_tree(proc)
