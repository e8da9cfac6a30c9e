"""Each thread's own publisher: one message in one round trip, on a connection of its
own, that survives Redis going away and never crosses a fork."""

from __future__ import annotations

import os
import threading

import pytest

from tests.apps import faults_app
from tests.helpers import private_redis

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(tmp_path):
    with private_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def celery(server, broker_url):
    # results on the run's Redis: the private one is the broker only
    _, celery = faults_app.create_app(
        server.url(), CELERY_RESULT_BACKEND=broker_url, CELERY_SUBMIT_TIMEOUT=4
    )
    yield celery
    celery.stop()


def _queued(server):
    return server.client().llen("faults")


def test_submits_go_through_one_connection_per_thread(celery, server):
    client = server.client()
    celery.submit(faults_app.add, 0, 0)
    clients = int(client.info("clients")["connected_clients"])
    for i in range(50):
        celery.submit(faults_app.add, i, i)
    # no new connection per message: the thread's publisher kept its own
    assert int(client.info("clients")["connected_clients"]) == clients

    errors = []

    def send():
        try:
            for i in range(20):
                celery.submit(faults_app.add, i, i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and _queued(server) == 1 + 50 + 80


def test_a_submit_after_redis_restarted_is_published_not_reported_lost(celery, server):
    celery.submit(faults_app.add, 0, 0)
    server.restart()
    future = celery.submit(faults_app.add, 1, 1)  # no BrokerUnavailable
    assert _queued(server) == 2 and not future.done()


def test_a_forked_child_sends_on_a_connection_of_its_own(celery, server):
    celery.submit(faults_app.add, 0, 0)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: submit, report, leave at once
        code = 1
        try:
            celery.submit(faults_app.add, 2, 2)
            code = 0
        finally:
            os.write(write, str(code).encode())
            os._exit(code)
    os.close(write)
    assert os.read(read, 1) == b"0"
    os.waitpid(pid, 0)
    celery.submit(faults_app.add, 3, 3)  # the parent's publisher still works
    assert _queued(server) == 3


def test_after_a_failed_submit_the_thread_publishes_again(celery, server):
    from flask_execute import BrokerUnavailable

    celery.submit(faults_app.add, 0, 0)
    server.stop()
    with pytest.raises(BrokerUnavailable, match="nothing was published"):
        celery.submit(faults_app.add, 1, 1)
    server.start()
    celery.submit(faults_app.add, 2, 2)  # a new publisher, or the usual way: published
    assert _queued(server) == 2
