"""Stopping local services loses and fails nothing it need not (issue 8, items 1, 11, 12).

Real ``celery worker`` processes on the run's Redis database: warm shutdown lets running
tasks finish and gives prefetched ones back, a cold one requeues ``acks_late`` tasks and
fails the others with a reason, on every path (``stop()``, the lifeline when the Flask
process dies, interpreter exit, ``flask celery cluster``). ``status()`` lists workers
nobody configured; ``flask celery status`` never warns about another process's flower.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from celery.exceptions import WorkerLostError
from flask import Flask

from flask_execute import Celery
from tests import helpers
from tests.apps import stops_app
from tests.apps.stops_app import count, slow

pytestmark = pytest.mark.timeout(60)

FLASK = helpers.FLASK

Make = Callable[..., tuple[Flask, Celery]]


def names(n: int = 1) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"s{i}{tag}" for i in range(n)]


@pytest.fixture
def shape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., dict[str, str]]:
    """Shape ``stops_app`` for one test: its own queue and log folder; the services load
    it (not services_app) so that they know its registered tasks."""
    monkeypatch.delenv("FLASK_APP", raising=False)
    monkeypatch.setenv("FLASK_EXECUTE_APP", stops_app.IMPORT_PATH)
    monkeypatch.setenv("SVC_QUEUE", f"stops-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("SVC_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("SVC_INSTANCE", str(tmp_path / "instance"))

    def configure(**config: object) -> dict[str, str]:
        monkeypatch.setenv("SVC_CONFIG", json.dumps(config))
        return {k: v for k, v in os.environ.items() if k.startswith("SVC_")}

    return configure


@pytest.fixture
def make_app(shape: Callable[..., dict[str, str]]) -> Iterator[Make]:
    with helpers.made_apps(stops_app.create_app, shape, stop_timeout=5) as make:
        yield make


def queued(app: Flask) -> int:
    """Messages waiting in the app's queue on the broker."""
    return int(stops_app.client().llen(app.config["CELERY_TASK_DEFAULT_QUEUE"]))


def stored_state(celery: Celery, task_id: str) -> str:
    """The task's state as the result backend has it (a fresh read, no cache)."""
    return str(celery.celery_app.backend.get_task_meta(task_id, cache=False)["status"])


# -- stop() ------------------------------------------------------------------------------


def test_stop_lets_running_tasks_finish_and_gives_the_prefetched_one_back(make_app):
    (worker,) = names()
    app, celery = make_app(CELERY_WORKERS={worker: {"concurrency": 2}})
    celery.start()
    tags = [f"run-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    running = [celery.submit(slow, tag, 3.0) for tag in tags[:2]]
    waiting = celery.submit(slow, tags[2], 0.1)
    helpers.wait_for(lambda: all(count(t, "started") for t in tags[:2]), message="two running")
    node = next(n for n in celery.status() if n.startswith(worker))
    reserved = helpers.wait_for(
        lambda: celery.inspect.reserved(destination=[node]).get(node), message="a prefetch"
    )
    assert [r["id"] for r in reserved] == [waiting.id]  # the worker holds it, not the queue

    began = time.monotonic()
    celery.stop(timeout=10)
    took = time.monotonic() - began
    finished = sum(count(t, "finished") for t in tags[:2])
    print(f"stop(timeout=10) with 2 running 3 s tasks: {finished} finished, took {took:.2f}s")

    assert [f.result(timeout=10) for f in running] == tags[:2]
    assert finished == 2
    assert count(tags[2], "started") == 0 and queued(app) == 1  # back in the queue
    celery.start()
    assert waiting.result(timeout=30) == tags[2]
    assert count(tags[2], "started") == 1


def test_a_task_cut_off_is_requeued_with_acks_late_and_fails_with_a_reason_without(make_app):
    (worker,) = names()
    app, celery = make_app(CELERY_WORKERS={worker: {"concurrency": 2}})
    late, early = f"late-{uuid.uuid4().hex[:8]}", f"early-{uuid.uuid4().hex[:8]}"
    late_future = celery.task["stops.once_late"].delay(late)
    early_future = celery.task["stops.once_early"].delay(early)
    helpers.wait_for(lambda: count(late, "started") and count(early, "started"), timeout=30)

    celery.stop(timeout=1)  # neither finishes in time: both are cut off

    # without acks_late: acknowledged when it started, so it cannot run again; it fails
    # with the reason instead of staying RETRY (and its Future waiting) forever
    with pytest.raises(WorkerLostError, match="without acks_late"):
        early_future.result(timeout=10)
    # with acks_late: back in the queue, no failure stored, its Future still waiting
    assert queued(app) == 1
    assert stored_state(celery, late_future.id) != "FAILURE"
    assert not late_future.done()
    celery.start()
    assert late_future.result(timeout=30) == 2  # the second run, on the next worker
    assert count(late, "started") == 2 and count(early, "started") == 1
    assert stored_state(celery, late_future.id) == "SUCCESS"


def test_a_worker_started_by_hand_fails_a_cancelled_task_with_a_reason(
    make_app, broker_url, tmp_path
):
    # The same rule on any worker of the app, not only those we launch: a cold shutdown
    # (SIGQUIT) of a hand-started worker fails a running task without acks_late.
    app, celery = make_app(CELERY_START_LOCAL_WORKERS=False)
    log = tmp_path / "worker.log"
    with helpers.running_worker(stops_app.IMPORT_PATH, celery.celery_app, broker_url, log) as proc:
        tag = f"hand-{uuid.uuid4().hex[:8]}"
        future = celery.task["stops.once_early"].delay(tag)
        helpers.wait_for(lambda: count(tag, "started"), timeout=30, message="task running")
        os.kill(proc.pid, signal.SIGQUIT)
        with pytest.raises(WorkerLostError, match="without acks_late"):
            future.result(timeout=15)
        assert proc.wait(timeout=15) is not None


# -- the Flask process goes away ---------------------------------------------------------


def start_main(env: dict[str, str]) -> subprocess.Popen[str]:
    env = helpers.test_env(**env, FLASK_EXECUTE_APP=stops_app.IMPORT_PATH)
    return helpers.start_script("tests.apps.stops_main", env)


def read_report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(helpers.read_line(proc, "RUNNING "))
    return report


@pytest.mark.parametrize("end", ["SIGKILL", "exit"])
def test_in_flight_tasks_finish_when_the_flask_process_goes(shape, end):
    env = shape(CELERY_WORKERS={names()[0]: {"concurrency": 2}}, CELERY_STOP_TIMEOUT=20)
    proc = start_main(env)
    try:
        report = read_report(proc)
        family = helpers.family_pids(report["processes"].values())
        if end == "SIGKILL":  # the lifeline: the services stop themselves
            proc.kill()
        else:  # interpreter exit (a reload's way out): atexit stops them
            assert proc.stdin is not None
            proc.stdin.close()
        proc.wait(timeout=30)
        helpers.wait_for(
            lambda: not any(psutil.pid_exists(p) for p in family),
            timeout=20,
            message="every service process gone",
        )
    finally:
        helpers.stop_process_tree(proc)
    assert [count(tag, "finished") for tag in report["tags"]] == [1, 1]
    app = stops_app.create_app()
    states = [stored_state(app.extensions["celery"], i) for i in report["ids"]]
    assert states == ["SUCCESS", "SUCCESS"]


# -- flask celery cluster ----------------------------------------------------------------


def test_cluster_ctrl_c_lets_the_running_task_finish(shape, tmp_path):
    env = shape(CELERY_WORKERS={names()[0]: {"concurrency": 1}}, CELERY_START_LOCAL_WORKERS=False)
    out = tmp_path / "cluster.out"
    proc = helpers.spawn(
        [FLASK, "celery", "cluster"],
        env=helpers.test_env(**env, FLASK_APP=stops_app.IMPORT_PATH),
        log=out,
    )
    try:
        helpers.wait_for(lambda: " ready." in out.read_text(), timeout=40, message="ready")
        app = stops_app.create_app()
        celery = app.extensions["celery"]
        tag = f"cluster-{uuid.uuid4().hex[:8]}"
        future = celery.submit(slow, tag, 3.0)
        helpers.wait_for(lambda: count(tag, "started"), timeout=20, message="task running")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) == 0, out.read_text()
        assert future.result(timeout=10) == tag
        assert "get 10s to finish" in out.read_text()
    finally:
        helpers.stop_process_tree(proc)


# -- status ------------------------------------------------------------------------------


def test_status_lists_a_worker_started_by_hand_every_time(make_app, tmp_path, broker_url):
    configured = names(2)
    app, celery = make_app(CELERY_WORKERS=configured)
    celery.start()
    hand = f"hand{uuid.uuid4().hex[:6]}"
    log = tmp_path / "hand.log"
    env = {k: v for k, v in os.environ.items() if k.startswith("SVC_")}
    proc = helpers.start_worker(
        stops_app.IMPORT_PATH, broker_url, log, name=f"{hand}@%h", concurrency=1, extra_env=env
    )
    try:
        helpers.wait_worker_ready(celery.celery_app, proc, log, name_prefix=f"{hand}@")
        seen = []
        for _ in range(10):
            status = {node.split("@")[0]: value for node, value in celery.status().items()}
            seen.append(status.get(hand))
            assert [status.get(name) for name in configured] == ["OK", "OK"], status
        assert seen == ["OK"] * 10
    finally:
        helpers.stop_process_tree(proc)


def test_status_never_warns_about_a_flower_another_process_runs(make_app, caplog):
    port = helpers.free_port()
    (worker,) = names()
    app, celery = make_app(CELERY_WORKERS=[worker], CELERY_FLOWER=True, CELERY_FLOWER_PORT=port)
    celery.start()
    assert "flower" in celery.processes
    env = {k: v for k, v in os.environ.items() if k.startswith("SVC_")}
    out = helpers.run_command([FLASK, "celery", "status"], **env, FLASK_APP=stops_app.IMPORT_PATH)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"-> {worker}@" in out.stdout
    assert "flower" not in out.stderr.lower()
    # a process that may start services finds the flower running, and says so quietly
    node = next(n for n in celery.status() if n.startswith(f"{worker}@"))
    other = stops_app.create_app()
    with caplog.at_level(logging.INFO, logger="flask_execute"):
        assert other.extensions["celery"].status()[node] == "OK"
    flower_lines = [r for r in caplog.records if "flower" in r.getMessage()]
    assert [r.levelno for r in flower_lines] == [logging.INFO]
    assert f"flower is running at 127.0.0.1:{port}" in flower_lines[0].getMessage()
