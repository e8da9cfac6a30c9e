"""Broker and backend faults: a stalled, restarted or abandoned Redis costs a bounded
time, and what the caller is told is true.

Every test that stops, pauses or restarts Redis does it to a private ``redis-server``
(:class:`tests.helpers.PrivateRedis`), never to the run's shared one. The figures the
documentation quotes are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_execute import BrokerUnavailable, Celery
from flask_execute.plugins import config as config_plugin
from tests.apps import faults_app
from tests.helpers import (
    PrivateRedis,
    private_redis,
    running_worker,
    start_worker,
    stop_process_tree,
    wait_for,
    wait_worker_ready,
)

APP = "tests.apps.faults_app:app"
QUEUE = "faults"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path / "redis") as running:
        yield running


def _queued_ids(server: PrivateRedis) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in server.client().lrange(QUEUE, 0, -1)]


def _has_result(server: PrivateRedis, task_id: str) -> bool:
    return bool(server.client().exists(f"celery-task-meta-{task_id}"))


# -- the defaults ----------------------------------------------------------------------


def test_fault_defaults_are_set_and_a_users_values_win():
    app, celery = faults_app.create_app(
        "redis://127.0.0.1:1/0",
        CELERY_SUBMIT_TIMEOUT=2,
        CELERY_RESULT_BACKEND_MAX_RETRIES=3,
    )
    conf = celery.celery_app.conf
    transport = conf.broker_transport_options
    # The user's (here the test app's) values stay; the rest are defaulted.
    assert transport["visibility_timeout"] == faults_app.VISIBILITY_TIMEOUT
    assert transport["unacked_restore_interval"] == 1
    assert transport["unacked_restore_throttle"] == 1
    assert transport["socket_timeout"] == transport["socket_connect_timeout"] == 0.5
    assert conf.redis_socket_timeout == conf.redis_socket_connect_timeout == 0.5
    assert conf.broker_connection_timeout == 0.5
    assert conf.result_backend_always_retry is True
    assert conf.result_backend_max_retries == 3

    plain = Flask(__name__)
    plain.config.update(CELERY_START_LOCAL_WORKERS=False)
    defaults = Celery(plain).celery_app.conf.broker_transport_options
    assert defaults["visibility_timeout"] == config_plugin.VISIBILITY_TIMEOUT == 900
    assert defaults["unacked_restore_interval"] == config_plugin.RESTORE_INTERVAL
    assert defaults["socket_timeout"] == 2.5  # CELERY_SUBMIT_TIMEOUT 10 / 4


def test_a_countdown_past_the_visibility_timeout_is_warned(broker_url, caplog):
    app, celery = faults_app.create_app(broker_url)
    with caplog.at_level(logging.WARNING, logger="flask_execute"):
        celery.submit(faults_app.add, 1, 2, countdown=faults_app.VISIBILITY_TIMEOUT - 1)
        assert "visibility_timeout" not in caplog.text
        celery.submit(faults_app.add, 1, 2, countdown=faults_app.VISIBILITY_TIMEOUT + 60)
    assert "may run twice" in caplog.text
    celery.stop()


# -- a stalled broker ------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_submit_to_a_stalled_broker_fails_in_time_and_says_what_may_arrive(server, tmp_path):
    timeout = 2.0
    _, warm = faults_app.create_app(server.url(), CELERY_SUBMIT_TIMEOUT=timeout)
    _, cold = faults_app.create_app(server.url(), CELERY_SUBMIT_TIMEOUT=timeout)
    first = warm.submit(faults_app.add, 0, 0)  # connected and listening before the stall
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as sent:
            warm.submit(faults_app.add, 1, 2)
        warm_took = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as unsent:
            cold.submit(faults_app.add, 3, 4)
        cold_took = time.monotonic() - started
    finally:
        server.resume()
    print(
        f"\nstalled broker: submit failed after {warm_took:.2f}s (connected), "
        f"{cold_took:.2f}s (first use); CELERY_SUBMIT_TIMEOUT={timeout}"
    )
    assert warm_took < timeout + 1 and cold_took < timeout + 1

    # The publish was written, never confirmed: it may arrive, and says how to get it.
    (maybe,) = sent.value.task_ids
    assert sent.value.may_arrive and sent.value.maybe_sent == (maybe,)
    assert f"the message may still arrive; its task id is {maybe}" in str(sent.value)
    # Nothing reached Redis for the other one, and the error says so.
    (never,) = unsent.value.task_ids
    assert not unsent.value.may_arrive and unsent.value.maybe_sent == ()
    assert f"nothing was published (task id {never})" in str(unsent.value)

    # Once Redis answers, the claims hold: one is queued and runs, the other never does.
    queued = _queued_ids(server)
    assert maybe in queued and never not in queued
    log = tmp_path / "worker.log"
    try:
        with running_worker(APP, warm.celery_app, server.url(), log, concurrency=1):
            assert warm.get(maybe).result(timeout=20) == 3
            assert first.result(timeout=20) == 0
            assert warm.submit(faults_app.add, 5, 6).result(timeout=20) == 11
            assert cold.submit(faults_app.add, 7, 8).result(timeout=20) == 15
            assert never not in _queued_ids(server) and not _has_result(server, never)
    finally:
        warm.stop()
        cold.stop()


def test_an_unreachable_broker_publishes_nothing_and_says_so(server):
    _, celery = faults_app.create_app(server.url(), CELERY_SUBMIT_TIMEOUT=2)
    celery.submit(faults_app.add, 0, 0)
    server.stop()
    with pytest.raises(BrokerUnavailable) as info:
        celery.map(faults_app.add, [1, 1], [2, 2])
    assert not info.value.may_arrive and len(info.value.task_ids) == 2
    assert "nothing was published" in str(info.value)
    assert not set(info.value.task_ids) & set(celery.state().futures.pending_ids())
    server.start()
    assert not set(info.value.task_ids) & set(_queued_ids(server))
    celery.stop()


# -- the worker and the listener through a stall and an outage --------------------------


@pytest.mark.timeout(90)
def test_worker_and_listener_live_through_a_stall(server, tmp_path):
    _, celery = faults_app.create_app(server.url())
    log = tmp_path / "worker.log"
    try:
        with running_worker(APP, celery.celery_app, server.url(), log, concurrency=2):
            futures = [celery.submit(faults_app.signal_and_sleep, "running", 1.5) for _ in range(4)]
            wait_for(lambda: server.client().llen("running") >= 2, timeout=20, message="tasks run")
            server.pause()
            # The stall itself (what is measured, not a synchronisation): longer than every
            # socket timeout of the web process and of the worker (2.5 s).
            time.sleep(4)
            server.resume()
            resumed = time.monotonic()
            assert [f.result(timeout=60) for f in futures] == ["running"] * 4
            assert celery.submit(faults_app.add, 2, 2).result(timeout=60) == 4
            print(f"\nstall of 4s: all futures resolved {time.monotonic() - resumed:.1f}s after it")
            assert server.client().llen("running") == 4  # each ran once
    finally:
        celery.stop()


@pytest.mark.timeout(120)
def test_a_restart_under_load_loses_nothing(server, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="flask_execute")
    _, celery = faults_app.create_app(server.url())
    log = tmp_path / "worker.log"
    # The worker keeps the default visibility timeout (a quarter hour): the messages it
    # had prefetched when its connection broke come back at once when it reconnects,
    # not after that timeout.
    env = {"FAULTS_DEFAULT_TRANSPORT": "1"}
    try:
        with running_worker(
            APP, celery.celery_app, server.url(), log, concurrency=4, extra_env=env
        ):
            pool = celery.map(faults_app.signal_and_sleep, *[("ran", 0.3)] * 50)
            wait_for(lambda: server.client().llen("ran") >= 8, timeout=30, message="tasks run")
            server.restart(down=5)
            restarted = time.monotonic()
            results = [f.result(timeout=60) for f in pool]
            ran = server.client().llen("ran")
            print(
                f"\nrestart of 5s under 50 tasks: {results.count('ran')}/50 SUCCESS, "
                f"{ran} runs, last result {time.monotonic() - restarted:.1f}s after restart"
            )
            assert results == ["ran"] * 50
            assert ran == 50  # nothing ran twice
            # The listener said once that it lost Redis, and once that it was back.
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert sum("result listener lost Redis" in m for m in said) == 1, said
            assert sum("result listener reconnected" in m for m in said) == 1, said
    finally:
        celery.stop()


# -- a killed worker ---------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_killed_workers_reserved_messages_come_back_in_time(server, tmp_path):
    _, celery = faults_app.create_app(server.url())
    client = server.client()
    holder_log, heir_log = tmp_path / "holder.log", tmp_path / "heir.log"
    holder = start_worker(APP, server.url(), holder_log, concurrency=1, name="holder@%h")
    heir = None
    try:
        wait_worker_ready(celery.celery_app, holder, holder_log)
        long = celery.submit(faults_app.signal_and_sleep, "long", 60)
        reserved = celery.map(faults_app.signal_and_sleep, *[("short", 0)] * 4)
        wait_for(lambda: client.llen("long") == 1, timeout=20, message="the long task runs")
        # acks early: the running task is acknowledged, the 4 prefetched ones are not.
        wait_for(lambda: client.hlen("unacked") == 4, timeout=20, message="4 prefetched")
        fetched = max(score for _, score in client.zrange("unacked_index", 0, -1, withscores=True))
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        killed, killed_at = time.monotonic(), time.time()
        heir = start_worker(APP, server.url(), heir_log, concurrency=2, name="heir@%h")
        wait_worker_ready(celery.celery_app, heir, heir_log)
        ready = time.monotonic()
        wait_for(lambda: client.llen("short") == 4, timeout=60, message="redelivery")
        back = time.monotonic()
        assert [f.result(timeout=20) for f in reserved] == ["short"] * 4
        # Due once the visibility timeout has passed since the fetch and the heir runs;
        # then the heir's next sweep (1 s here, scanning every sweep) finds them.
        due = max(ready, killed + fetched + faults_app.VISIBILITY_TIMEOUT - killed_at)
        print(
            f"\nkilled worker: its 4 reserved messages ran {back - killed:.1f}s after the "
            f"kill (visibility_timeout {faults_app.VISIBILITY_TIMEOUT}s)"
        )
        assert back - due < 1 + 2  # one sweep, plus time to fetch and run
        assert client.llen("long") == 1 and not long.done()  # acked early: not run again
    finally:
        stop_process_tree(holder)
        if heir is not None:
            stop_process_tree(heir)
        celery.stop()


def test_a_map_the_broker_takes_in_part_fails_the_rest_and_says_which(server, broker_url):
    # The broker runs out of memory half-way through the map: the chunks it took stay
    # on their way, the calls of the others fail with the error, nothing is left waiting.
    client = server.client()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", used + 2 * 2**20)
    _, celery = faults_app.create_app(server.url(), CELERY_RESULT_BACKEND=broker_url)
    blob = b"x" * 200_000
    with pytest.raises(BrokerUnavailable) as info:
        celery.options(chunksize=1).map(faults_app.add, *[(blob, b"")] * 40)
    error = info.value
    pool = error.pool
    assert pool is not None and len(pool) == 40 and len(error.task_ids) == 40
    queued = client.llen("faults")
    assert 0 < queued < 40 and len(error.maybe_sent) == queued
    assert error.maybe_sent == tuple(pool.id[:queued])
    assert f"{queued} may still run" in str(error)
    assert not any(f.done() for f in pool[:queued])
    assert all(f.exception(timeout=0) is error for f in pool[queued:])
    pending = celery.state().futures.pending_ids()
    assert len(pending) == queued  # one chunk each, none of the failed ones
    celery.stop()
