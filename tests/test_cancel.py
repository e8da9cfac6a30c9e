"""Cooperative cancel: ``current_task.cancelled``, termination after the grace period,
and queued tasks that never run, against real workers on Redis, RabbitMQ and the
filesystem broker of the development fallback.

Each broker gets one worker (``tests.apps.cancel_app``, prefork, two processes) for the
module. RabbitMQ runs the tests in a virtual host of this test run's own
(:func:`tests.helpers.rabbitmq_vhost`, deleted at the end), with the run's
Redis database as result backend. The functions signal through that Redis database.
On the filesystem broker both sides write message files whole (``put_whole``): kombu's
own transport lets a worker read a file it has not finished writing and stop
(kombu#1551), whatever the task.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from celery import states
from flask import Flask
from kombu.transport import filesystem

from flask_execute import Celery, Future, current_task
from flask_execute.plugins.cancel import broadcasts
from flask_execute.runtime import AppState
from tests import helpers
from tests.apps import cancel_app
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(120)

APP = "tests.apps.cancel_app:app"


@dataclass
class Node:
    """One broker choice: the test's own app on it, and the worker serving it."""

    name: str
    settings: dict[str, Any]
    app: Flask
    celery: Celery
    worker: subprocess.Popen[bytes]

    def seen_elsewhere(self, task_id: str) -> Future:
        """The Future ``celery.get`` gives in a second application instance on the same
        broker and backend (its result source stopped again)."""
        app, celery = cancel_app.create_app(**self.settings)
        try:
            return celery.get(task_id)
        finally:
            AppState.of(app).futures.close()

    def state(self, task_id: str) -> str:
        return str(self.celery.celery_app.AsyncResult(task_id).state)

    def children(self) -> set[int]:
        return {p.pid for p in psutil.Process(self.worker.pid).children()}


# -- brokers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    with helpers.rabbitmq_vhost("cancel") as url:
        yield url


def _settings(name: str, broker_url: str, folder: Path, request: Any) -> dict[str, Any]:
    if name == "redis":
        return {"broker": broker_url}
    if name == "amqp":
        return {"broker": request.getfixturevalue("amqp_url"), "backend": broker_url}
    (folder / "results").mkdir(parents=True, exist_ok=True)
    return {"broker": "filesystem://", "backend": f"file://{folder}/results", "folder": str(folder)}


def _worker_env(settings: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {"CANCEL_TEST_BACKEND": settings.get("backend") or "", **extra}
    if settings.get("folder"):
        env.update(CANCEL_TEST_FOLDER=settings["folder"], CANCEL_TEST_FILESYSTEM="1")
    return env


@pytest.fixture(scope="module", autouse=True)
def whole_messages() -> Iterator[None]:
    """This process writes filesystem messages whole too (see ``put_whole``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(filesystem.Channel, "_put", cancel_app.put_whole)
        yield


@pytest.fixture(scope="module", params=["redis", "amqp", "filesystem"])
def node(request, broker_url, tmp_path_factory, session_pids) -> Iterator[Node]:
    """A worker of ``cancel_app`` on each broker, and the test's app beside it."""
    folder = tmp_path_factory.mktemp(f"cancel-{request.param}")
    settings = _settings(request.param, broker_url, folder / "broker", request)
    app, celery = cancel_app.create_app(**settings)
    with _worker(celery, settings, folder / "worker.log", session_pids) as proc:
        yield Node(request.param, settings, app, celery, proc)


@contextlib.contextmanager
def _worker(
    celery: Celery, settings: dict[str, Any], log: Path, session_pids: set[int], **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker for the module (exempt from the orphan check), ready when the block
    starts. On the filesystem broker a task's round trip says it is ready: a broadcast
    there may be read before it is written (kombu#1551), so the tests send few."""
    extra = _worker_env(settings, **env)
    name = f"cancel-{uuid.uuid4().hex[:8]}"
    proc = helpers.start_worker(APP, settings["broker"], log, name=f"{name}@%h", extra_env=extra)
    session_pids.add(proc.pid)
    try:
        if settings.get("folder"):
            served = celery.submit(cancel_app.pid).result(timeout=60)
            assert proc.poll() is None and isinstance(served, int), log.read_text()
        else:
            helpers.wait_worker_ready(celery.celery_app, proc, log, name_prefix=f"{name}@")
        yield proc
    finally:
        session_pids.discard(proc.pid)
        helpers.stop_process_tree(proc)


@pytest.fixture
def signals(broker_url) -> Iterator[tuple[str, redis.Redis]]:
    """A key prefix of the test's own in the run's Redis database, and a client."""
    key = f"test-cancel:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(broker_url)
    yield key, client
    client.delete(*client.keys(f"{key}:*") or [key])


def _started(client: redis.Redis, key: str) -> int:
    """The pid of the worker process that started the function behind ``key``."""
    found = wait_for(lambda: client.lindex(f"{key}:started", 0), timeout=30, message="start")
    return int(found)


# -- a running task stops by itself ------------------------------------------------------


def test_a_running_task_sees_cancelled_cleans_up_and_is_revoked(node, signals, broker_url):
    key, client = signals
    future = node.celery.submit(cancel_app.cooperative, broker_url, key)
    pid = _started(client, key)
    assert future.cancel() is True
    assert future.cancelled() and future.done() and future.state == states.REVOKED
    with pytest.raises(cf.CancelledError):
        future.result(timeout=0)
    # within its grace the task runs on, until it looks at current_task.cancelled
    beats = int(client.get(f"{key}:beats") or 0)
    wait_for(lambda: int(client.get(f"{key}:beats") or 0) >= beats + 5, message="beats")
    assert pid in node.children()  # not terminated within its grace
    client.set(f"{key}:look", 1)
    cleaned = wait_for(lambda: client.get(f"{key}:cleanup"), timeout=30, message="cleanup")
    assert int(cleaned) == pid
    wait_for(lambda: node.state(future.id) == states.REVOKED, timeout=30, message="REVOKED")
    assert node.seen_elsewhere(future.id).cancelled()
    assert pid in node.children()  # it stopped by itself: its process lives on


def test_a_registered_task_sees_cancelled_too(node, signals, broker_url):
    key, client = signals
    future = node.celery.task[cancel_app.REGISTERED].delay(broker_url, key)
    pid = _started(client, key)
    client.set(f"{key}:look", 1)
    assert future.cancel() is True
    cleaned = wait_for(lambda: client.get(f"{key}:cleanup"), timeout=30, message="cleanup")
    assert int(cleaned) == pid
    wait_for(lambda: node.state(future.id) == states.REVOKED, timeout=30, message="REVOKED")


def test_a_task_that_ignores_cancel_is_terminated_after_the_grace(
    node, signals, broker_url, monkeypatch
):
    key, client = signals
    monkeypatch.setitem(node.app.config, "CELERY_CANCEL_GRACE", 1)
    future = node.celery.submit(cancel_app.stubborn, broker_url, key)
    pid = _started(client, key)
    cancelled_at = time.monotonic()
    assert future.cancel() is True
    wait_for(lambda: pid not in node.children(), timeout=30, message="process replaced")
    assert time.monotonic() - cancelled_at >= 0.95  # not before its grace ran out
    wait_for(lambda: node.state(future.id) == states.REVOKED, timeout=30, message="REVOKED")
    wait_for(lambda: len(node.children()) == 2, timeout=30, message="pool refilled")
    assert node.seen_elsewhere(future.id).cancelled()
    assert node.celery.submit(cancel_app.pid).result(timeout=30) in node.children()


def test_with_no_grace_a_running_task_is_terminated_at_once(node, signals, broker_url, monkeypatch):
    key, client = signals
    monkeypatch.setitem(node.app.config, "CELERY_CANCEL_GRACE", 0)
    future = node.celery.submit(cancel_app.cooperative, broker_url, key)
    pid = _started(client, key)
    assert future.cancel() is True  # it never looks: terminated by Celery's revoke
    wait_for(lambda: node.state(future.id) == states.REVOKED, timeout=30, message="REVOKED")
    wait_for(lambda: pid not in node.children(), timeout=30, message="process replaced")
    wait_for(lambda: len(node.children()) == 2, timeout=30, message="pool refilled")


# -- a queued task never runs ------------------------------------------------------------


def _hold_both(node: Node, client: redis.Redis, key: str, url: str) -> list[Any]:
    holders = [node.celery.submit(cancel_app.held, url, key, f"h{i}") for i in range(2)]
    ran = lambda: set(client.lrange(f"{key}:ran", 0, -1))
    wait_for(lambda: ran() == {b"h0", b"h1"}, timeout=30, message="both processes held")
    return holders


def _in_worker(node: Node, task_id: str) -> bool:
    """Whether the worker holds the task: prefetched, or running."""
    inspect = node.celery.celery_app.control.inspect(timeout=1)
    replies = [*(inspect.reserved() or {}).values(), *(inspect.active() or {}).values()]
    return any(task["id"] == task_id for tasks in replies for task in tasks)


def test_a_queued_task_never_runs(node, signals, broker_url):
    key, client = signals
    holders = _hold_both(node, client, key, broker_url)
    victim = node.celery.submit(cancel_app.held, broker_url, key, "victim")
    # Redis and RabbitMQ: the worker took the message and handed it to its pool, which
    # waits for a free process; Celery's revoke alone would not stop it there. (On the
    # filesystem broker, where inspect's replies may be read half-written, kombu#1551,
    # it waits wherever it waits.)
    inspectable = not node.settings.get("folder")
    if inspectable:
        wait_for(lambda: _in_worker(node, victim.id), timeout=30, message="victim taken")
    assert victim.cancel() is True
    if inspectable:
        # Celery's revoke stores REVOKED for a task that waits: the worker has the
        # cancel. (A process freed before the cancel reaches the worker starts the
        # task, which then sees current_task.cancelled at its first question.) The
        # filesystem broker's worker, blocked on the message it holds, reads the cancel
        # only later: there every task reads its mark as it starts.
        wait_for(lambda: node.state(victim.id) == states.REVOKED, timeout=30, message="REVOKED")
    client.rpush(f"{key}:release", 1)
    assert [h.result(timeout=30) for h in holders] == ["h0", "h1"]
    if inspectable:
        wait_for(lambda: not _in_worker(node, victim.id), timeout=30, message="its turn")
    # sent after it, so handed to a process after it (or after it was dropped)
    assert node.celery.submit(cancel_app.pid).result(timeout=30)
    assert sorted(client.lrange(f"{key}:ran", 0, -1)) == [b"h0", b"h1"]
    assert node.state(victim.id) == states.REVOKED


# -- a call of a map -------------------------------------------------------------------


def test_a_call_of_a_map_sees_cancelled_and_the_next_call_runs(node, signals, broker_url):
    key, client = signals
    pool = node.celery.options(chunksize=2).map(
        cancel_app.polls, (broker_url, key, 0), (broker_url, key, 1)
    )
    _started(client, key)
    assert pool[0].cancel() is True
    cleaned = wait_for(lambda: client.get(f"{key}:cleanup"), timeout=30, message="cleanup")
    assert cleaned.decode() == pool[0].id  # the call itself saw it, under its own id
    assert pool[1].result(timeout=30) == "call 1"  # its chunk was not revoked
    assert pool[0].cancelled() and not pool[1].cancelled()
    assert node.seen_elsewhere(pool[0].id).cancelled()


# -- without broadcast, and with the plugin blocked --------------------------------------


@pytest.fixture(scope="module")
def quiet(broker_url, tmp_path_factory, session_pids) -> Iterator[Node]:
    """A worker on a filesystem broker that claims no fanout exchange (kombu before 5.3,
    celery#6043): no revoke reaches it, it has no remote control."""
    folder = tmp_path_factory.mktemp("cancel-quiet")
    settings = _settings("filesystem", broker_url, folder / "broker", None)
    app, celery = cancel_app.create_app(**settings)
    with pytest.MonkeyPatch.context() as patch:  # for this app only: it asks once
        patch.setattr(filesystem.Transport, "implements", cancel_app.no_fanout())
        assert broadcasts(AppState.of(app)) is False
    log = folder / "worker.log"
    with _worker(celery, settings, log, session_pids, CANCEL_TEST_NO_BROADCAST="1") as proc:
        yield Node("filesystem-quiet", settings, app, celery, proc)


def test_without_broadcast_a_queued_task_never_runs(quiet, signals, broker_url):
    key, client = signals
    holders = _hold_both(quiet, client, key, broker_url)
    victim = quiet.celery.submit(cancel_app.held, broker_url, key, "victim")
    assert victim.cancel() is True
    client.rpush(f"{key}:release", 1)
    assert [h.result(timeout=30) for h in holders] == ["h0", "h1"]
    # only the task itself, reading its mark as it starts, stores REVOKED here
    wait_for(lambda: quiet.state(victim.id) == states.REVOKED, timeout=30, message="REVOKED")
    assert sorted(client.lrange(f"{key}:ran", 0, -1)) == [b"h0", b"h1"]


def test_without_broadcast_a_task_is_terminated_after_the_grace(
    quiet, signals, broker_url, monkeypatch
):
    key, client = signals
    monkeypatch.setitem(quiet.app.config, "CELERY_CANCEL_GRACE", 1)
    future = quiet.celery.submit(cancel_app.stubborn, broker_url, key)
    pid = _started(client, key)
    assert future.cancel() is True
    wait_for(lambda: quiet.state(future.id) == states.REVOKED, timeout=30, message="REVOKED")
    wait_for(lambda: pid not in quiet.children(), timeout=30, message="process replaced")
    wait_for(lambda: len(quiet.children()) == 2, timeout=30, message="pool refilled")


def test_with_the_cancel_plugin_blocked_cancel_terminates_at_once(
    broker_url, signals, tmp_path, session_pids
):
    key, client = signals
    app, celery = cancel_app.create_app(broker_url, block=True)
    assert app.extensions["flask_execute"].pm.is_blocked("cancel")
    env = {"CANCEL_TEST_BLOCK": "1"}
    with helpers.running_worker(
        APP, celery.celery_app, broker_url, tmp_path / "w.log", name="blocked", extra_env=env
    ) as proc:
        future = celery.submit(cancel_app.cooperative, broker_url, key)
        pid = _started(client, key)
        client.set(f"{key}:look", 1)  # it looks at current_task.cancelled from now on
        assert future.cancel() is True
        wait_for(lambda: celery.celery_app.AsyncResult(future.id).state == states.REVOKED)
        family = lambda: {p.pid for p in psutil.Process(proc.pid).children()}
        wait_for(lambda: pid not in family(), timeout=30, message="process terminated")
        assert client.get(f"{key}:cleanup") is None  # cancelled never turned true


# -- eager mode and the unit pieces ------------------------------------------------------


def test_in_eager_mode_cancelled_is_false_and_a_done_future_cannot_cancel():
    app = Flask(__name__)
    app.config["CELERY_ALWAYS_EAGER"] = True
    celery = Celery(app)
    future = celery.submit(lambda: (bool(current_task), current_task.cancelled))
    assert future.result(timeout=5) == (True, False)
    assert future.cancel() is False and not future.cancelled()


def test_current_task_cancelled_outside_a_task_is_unbound():
    with pytest.raises(RuntimeError, match="only available while a task runs"):
        _ = current_task.cancelled
