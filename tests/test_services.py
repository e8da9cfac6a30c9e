"""Local services: real worker, flower and beat processes started by the extension."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from flask_execute import ConfigurationError, ServiceError
from tests import helpers
from tests.apps import services_app

pytestmark = pytest.mark.timeout(120)


def launched(parent: int | None = None) -> list[psutil.Process]:
    """Main processes (group leaders) of local services started by this test run."""
    found = []
    for p in helpers.marked_processes():
        try:
            cmd = p.cmdline()
            leader = os.getpgid(p.pid) == p.pid
            if "flask_execute.launch" in cmd and leader and (parent is None or p.ppid() == parent):
                found.append(p)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return found


def kinds(processes: list[psutil.Process]) -> list[str]:
    out = []
    for p in processes:
        try:
            out.append(p.cmdline()[p.cmdline().index("flask_execute.celery") + 1])
        except (psutil.NoSuchProcess, ValueError, IndexError):
            continue
    return sorted(out)


@pytest.fixture
def shape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Configure services_app for one test: its own queue, worker names and log folder."""
    monkeypatch.delenv("FLASK_APP", raising=False)
    monkeypatch.delenv("FLASK_EXECUTE_APP", raising=False)
    monkeypatch.setenv("SVC_QUEUE", f"svc-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("SVC_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("SVC_INSTANCE", str(tmp_path / "instance"))

    def configure(**config: object) -> dict[str, str]:
        monkeypatch.setenv("SVC_CONFIG", json.dumps(config))
        return dict(os.environ)

    return configure


@pytest.fixture
def make_app(shape) -> Iterator:
    with helpers.made_apps(services_app.create_app, shape, stop_timeout=10) as make:
        yield make


def names(n: int = 1) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"w{i}{tag}" for i in range(n)]


def test_first_submit_starts_workers_status_logs_and_stop(make_app):
    workers = names(2)
    app, celery = make_app(CELERY_WORKERS=workers)
    assert celery.processes == {}
    assert celery.submit(services_app.add, 1, 2).result(timeout=30) == 3
    assert sorted(celery.processes) == sorted(workers)
    status = {k.split("@")[0]: v for k, v in celery.status().items()}
    assert {k: v for k, v in status.items() if k in workers} == dict.fromkeys(workers, "OK")
    for name, path in celery.logs.items():
        assert Path(path).parent == Path(app.config["CELERY_LOG_DIR"])
        assert f"{name}@" in Path(path).read_text()  # the worker's own banner
    pids = list(celery.processes.values())
    celery.stop()
    assert celery.processes == {}
    assert not [p for p in pids if psutil.pid_exists(p)]
    after = celery.status(timeout=0.3)
    assert {k.split("@")[0] for k, v in after.items() if v == "OFFLINE"} == set(workers)
    # the next submit starts them again
    assert celery.submit(services_app.add, 2, 2).result(timeout=30) == 4
    assert sorted(celery.processes) == sorted(workers)


def test_worker_options_and_queue_routing_of_the_guide(make_app):
    foo, bar, baz = names(3)
    high, low = f"high-{foo}", f"low-{foo}"
    app, celery = make_app(
        CELERY_WORKERS={
            foo: {"queues": [low, high], "concurrency": 1},
            bar: {"queues": [high], "concurrency": 1, "loglevel": "warning"},
            baz: {},
        }
    )
    celery.start()
    nodes = list(celery.status())  # our three, all answering
    assert len([n for n in nodes if n.split("@")[0] in (foo, bar, baz)]) == 3
    ours = [n for n in nodes if n.split("@")[0] in (foo, bar, baz)]
    stats = celery.inspect.stats(destination=ours, timeout=10)
    pools = {name.split("@")[0]: s["pool"]["max-concurrency"] for name, s in stats.items()}
    assert pools[foo] == 1 and pools[bar] == 1
    queues = {
        name.split("@")[0]: sorted(q["name"] for q in qs)
        for name, qs in celery.inspect.active_queues(destination=ours, timeout=10).items()
    }
    assert queues[foo] == sorted([low, high]) and queues[bar] == [high]
    assert queues[baz] == [app.config["CELERY_TASK_DEFAULT_QUEUE"]]
    on_high = {celery.submit(services_app.where, queue=high).result(timeout=30) for _ in range(8)}
    assert {h.split("@")[0] for h in on_high} <= {foo, bar}
    assert celery.submit(services_app.where, queue=low).result(timeout=30).startswith(foo)
    assert celery.submit(services_app.where).result(timeout=30).startswith(baz)


def test_explicit_start_ignores_start_local_workers_but_submit_respects_it(make_app, redis_db):
    (worker,) = names()
    app, celery = make_app(CELERY_WORKERS=[worker], CELERY_START_LOCAL_WORKERS=False)
    future = celery.submit(services_app.add, 1, 1)
    assert celery.processes == {} and not launched(os.getpid())
    celery.start()
    assert list(celery.processes) == [worker]
    # start() returns when the worker answers remote control, not merely when it is up
    assert {k.split("@")[0]: v for k, v in celery.status(timeout=0.5).items()}[worker] == "OK"
    assert future.result(timeout=30) == 2  # the queued task ran once a worker came


def test_eager_mode_never_starts_services(make_app):
    app, celery = make_app(CELERY_WORKERS=names(), CELERY_ALWAYS_EAGER=True)
    assert celery.submit(services_app.add, 1, 1).result() == 2
    assert celery.processes == {} and not launched(os.getpid())


def test_a_worker_already_online_is_not_started_twice(make_app):
    (worker,) = names()
    first_app, first = make_app(CELERY_WORKERS=[worker])
    first.start()
    # a second app of another log folder (so no shared host lock) sees it online
    second_app = services_app.create_app()
    second_app.config["CELERY_LOG_DIR"] = str(Path(first_app.config["CELERY_LOG_DIR"]) / "other")
    second = second_app.extensions["celery"]
    try:
        second.start()
        assert second.processes == {}
        assert len(launched(os.getpid())) == 1
    finally:
        second.stop()


def test_start_failure_names_the_service_its_log_and_leaves_nothing(make_app, redis_db):
    (worker,) = names()
    app, celery = make_app(CELERY_WORKERS={worker: {"pool": "no-such-pool"}})
    queue = app.config["CELERY_TASK_DEFAULT_QUEUE"]
    with pytest.raises(ServiceError) as info:
        celery.submit(services_app.add, 1, 2)
    message = str(info.value)
    assert worker in message and f"{worker}.log" in message and "exited with code" in message
    assert "no-such-pool" in message  # the last log lines explain it
    assert celery.processes == {} and not launched(os.getpid())
    assert redis.Redis(host="127.0.0.1", port=6379, db=redis_db).llen(queue) == 0
    assert celery.state().futures.pending_ids() == []


def test_start_timeout_raises_and_stops_everything(make_app):
    (worker,) = names()
    app, celery = make_app(CELERY_WORKERS=[worker])
    with pytest.raises(ServiceError, match=r"not ready within 0\.01s"):
        celery.start(timeout=0.01)
    assert celery.processes == {}
    helpers.wait_for(lambda: not launched(os.getpid()), timeout=10, message="no services")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("two", "CELERY_WORKERS must be a number"),
        (True, "CELERY_WORKERS must be a number"),
        (["a", "a"], "CELERY_WORKERS must be a number"),
        ({"a": {"concurrenci": 2}}, "unknown worker option 'concurrenci'"),
        ({"a": 3}, r"CELERY_WORKERS\['a'\] must be a dict"),
        (["a@host"], "without a host"),
    ],
)
def test_bad_worker_config_fails_at_init_app(shape, value, match):
    shape(CELERY_WORKERS=value)
    with pytest.raises(ConfigurationError, match=match):
        services_app.create_app()
    assert not launched(os.getpid())


def test_flower_starts_serves_and_stops(make_app):
    port = free_port()
    app, celery = make_app(CELERY_WORKERS=names(), CELERY_FLOWER=True, CELERY_FLOWER_PORT=port)
    celery.start()
    assert "flower" in celery.processes
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=10) as reply:
        assert reply.read() == b"OK"
    celery.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_taken_flower_port_and_missing_flower_are_warnings_naming_the_key(
    make_app, caplog, monkeypatch
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app, celery = make_app(CELERY_WORKERS=names(), CELERY_FLOWER=True, CELERY_FLOWER_PORT=port)
        with caplog.at_level(logging.WARNING, logger="flask_execute"):
            celery.start()
            assert celery.logs  # describes the services again
        assert "CELERY_FLOWER_PORT" in caplog.text
        assert caplog.text.count("is taken") == 1  # said once, not on every description
        assert "flower" not in celery.processes and len(celery.processes) == 1
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "flower" else real(n, *a)
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flask_execute"):
        assert [s.kind for s in celery.state().supervisor.describe()] == ["worker"]
    assert "pip install flower" in caplog.text and "CELERY_FLOWER" in caplog.text


def test_beat_starts_only_with_a_schedule(make_app):
    app, celery = make_app(CELERY_WORKERS=names())
    assert [s.kind for s in celery.state().supervisor.describe()] == ["worker"]
    schedule = {"tick": {"task": "nothing.here", "schedule": 3600.0}}
    app, celery = make_app(CELERY_WORKERS=names(), CELERYBEAT_SCHEDULE=schedule)
    celery.start()
    assert "beat" in celery.processes and len(celery.processes) == 2
    log_dir = Path(app.config["CELERY_LOG_DIR"])
    helpers.wait_for(
        lambda: list(log_dir.glob("celerybeat-schedule-*")), timeout=10, message="beat state"
    )
    assert not list(Path.cwd().glob("celerybeat-schedule*"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- processes of their own --------------------------------------------------------------


def start_main(env: dict[str, str]) -> subprocess.Popen[str]:
    env = helpers.test_env(
        **{k: v for k, v in env.items() if k.startswith(("SVC_", "FLASK_EXECUTE_TEST"))}
    )
    env["FLASK_APP"] = "tests.apps.services_app:create_app()"
    return helpers.start_script("tests.apps.services_main", env)


def read_report(proc: subprocess.Popen[str]) -> dict[str, int]:
    report = json.loads(helpers.read_line(proc, "PROCESSES ").rsplit(" ", 1)[0])
    return {k: int(v) for k, v in report.items()}


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_services_die_with_the_flask_process(shape, signum):
    env = shape(CELERY_WORKERS=names(2))
    proc = start_main(env)
    try:
        services = read_report(proc)
        assert len(services) == 2
        family = helpers.family_pids(services.values())
        assert len(family) > 2  # worker main processes and their pool children
        os.kill(proc.pid, signum)
        proc.wait(timeout=30)
        helpers.wait_for(
            lambda: not any(psutil.pid_exists(p) for p in family),
            timeout=8,
            message="every service process gone",
        )
    finally:
        helpers.stop_process_tree(proc)


def test_three_processes_share_one_set_and_one_beat_then_hand_over(shape):
    schedule = {"tick": {"task": "nothing.here", "schedule": 3600.0}}
    env = shape(CELERY_WORKERS=names(1), CELERYBEAT_SCHEDULE=schedule)
    procs = [start_main(env) for _ in range(3)]
    try:
        reports = [read_report(p) for p in procs]
        owners = [i for i, r in enumerate(reports) if r]
        assert len(owners) == 1 and len(reports[owners[0]]) == 2
        assert "beat" in reports[owners[0]]
        assert kinds(launched()) == ["beat", "worker"]
        # the owner exits: one of the others takes over, still one set
        owner = procs[owners[0]]
        assert owner.stdin is not None
        owner.stdin.close()
        owner.wait(timeout=30)
        rest = [p.pid for i, p in enumerate(procs) if i != owners[0]]
        helpers.wait_for(
            lambda: kinds([p for pid in rest for p in launched(pid)]) == ["beat", "worker"],
            timeout=30,
            message="a follower took over",
        )
        assert kinds(launched()) == ["beat", "worker"]
    finally:
        for p in procs:
            if p.stdin and not p.stdin.closed:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                helpers.stop_process_tree(p)
    helpers.wait_for(lambda: not launched(), timeout=10, message="all stopped at exit")


def test_reloader_restart_leaves_exactly_one_set(shape, tmp_path):
    env = shape(CELERY_WORKERS=names(1))
    web = tmp_path / "webapp.py"
    web.write_text("from tests.apps.services_app import create_app\napp = create_app()\n")
    port = free_port()
    run_env = helpers.test_env(
        **{k: v for k, v in env.items() if k.startswith("SVC_")},
        FLASK_APP=str(web),
        PYTHONPATH=f"{helpers.ROOT}",
    )
    log = tmp_path / "flask.log"
    proc = helpers.spawn(
        [sys.executable, "-m", "flask", "run", "--reload", "--port", str(port)],
        env=run_env,
        log=log,
    )

    def get() -> dict[str, int] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as reply:
                return json.loads(reply.read())
        except OSError:
            return None

    try:
        first = helpers.wait_for(get, timeout=60, interval=0.2, message="first request")
        assert first["result"] == 5
        assert len(launched(first["pid"])) == 1
        web.write_text(web.read_text() + "# touched\n")
        second = helpers.wait_for(
            lambda: (r := get()) and r["pid"] != first["pid"] and r,
            timeout=60,
            interval=0.3,
            message="the reloaded child answers",
        )
        assert second["result"] == 5
        helpers.wait_for(
            lambda: len(launched()) == 1 and len(launched(second["pid"])) == 1,
            timeout=20,
            message="exactly one set after the reload",
        )
    finally:
        helpers.stop_process_tree(proc)
    helpers.wait_for(lambda: not launched(), timeout=10, message="no services after exit")


def test_filesystem_fallback_without_redis(shape, monkeypatch, caplog):
    from flask_execute.plugins.services import fallback

    monkeypatch.setattr(fallback, "redis_answers", lambda *a, **k: False)
    shape(CELERY_WORKERS=names(1), CELERY_BROKER_URL="__unset__")
    monkeypatch.delenv(fallback.CHOICE_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="flask_execute"):
        app = services_app.create_app()
    celery = app.extensions["celery"]
    try:
        assert celery.celery_app.conf.broker_url == "filesystem://"
        assert "filesystem broker" in caplog.text and "CELERY_BROKER_URL" in caplog.text
        assert str(celery.celery_app.conf.result_backend).startswith("file://")
        assert celery.submit(services_app.add, 20, 22).result(timeout=30) == 42
        assert celery.map(services_app.add, [1, 1], [2, 2]).result(timeout=30) == [2, 4]
        assert set(celery.status().values()) == {"OK"}  # remote control works on it
        assert list(celery.inspect.ping())
    finally:
        celery.stop()


def test_no_fallback_when_local_workers_are_off(shape, monkeypatch):
    from flask_execute.plugins.config import DEFAULT_BROKER_URL
    from flask_execute.plugins.services import fallback

    monkeypatch.setattr(fallback, "redis_answers", lambda *a, **k: False)
    shape(CELERY_START_LOCAL_WORKERS=False, CELERY_BROKER_URL="__unset__")
    app = services_app.create_app()
    assert app.extensions["celery"].celery_app.conf.broker_url == DEFAULT_BROKER_URL


def test_polling_source_delivers_every_progress_update(tmp_path):
    from flask import Flask

    from flask_execute import Celery

    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        CELERY_BROKER_URL="memory://",
        CELERY_RESULT_BACKEND=f"file://{tmp_path / 'results'}",
        CELERY_START_LOCAL_WORKERS=False,
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    )
    (tmp_path / "results").mkdir()
    celery = Celery(app)
    state = celery.state()
    future = state.pm.make_future(app, str(uuid.uuid4()), "progress")
    state.futures.track(future)
    backend = celery.celery_app.backend
    try:
        for step in (1, 2, 3):  # what a worker's update_state stores
            backend.store_result(future.id, {"step": step}, "PROGRESS")
            helpers.wait_for(
                lambda step=step: future.info == {"step": step}, timeout=5, message=f"step {step}"
            )
        backend.store_result(future.id, 42, "SUCCESS")
        assert future.result(timeout=5) == 42
    finally:
        state.futures.close()
