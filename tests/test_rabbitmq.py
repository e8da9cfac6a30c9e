"""RabbitMQ as the broker, Redis as the result backend, as a development app runs them.

``tests.apps.rabbit_app`` starts its own worker and beat on the first submit, in a
RabbitMQ virtual host of this test run's own (:func:`tests.helpers.rabbitmq_vhost`),
with the run's Redis database as result backend. The module skips only when no
RabbitMQ answers (``tests/run.sh`` starts one).
"""

from __future__ import annotations

import concurrent.futures as cf
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from amqp.exceptions import NotFound
from celery import states
from flask import Flask

from flask_execute import Celery, ConfigurationError
from flask_execute.beat import RedisBeatLock, lock_key, lock_url, make_lock
from tests import helpers
from tests.apps import rabbit_app
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)

FLASK = helpers.FLASK
APP = "tests.apps.rabbit_app:create_app()"


@dataclass
class Rabbit:
    """The app on RabbitMQ, its services running, and where it lives."""

    app: Flask
    celery: Celery
    amqp: str
    worker: str
    backend: redis.Redis

    def queued(self, queue: str | None = None) -> tuple[int, int] | None:
        """``(messages, consumers)`` of a queue (the app's by default) as RabbitMQ
        counts them; ``None`` if the vhost has no such queue."""
        queue = queue or self.celery.celery_app.conf.task_default_queue
        with self.celery.celery_app.connection_for_write() as connection:
            try:
                declared = connection.default_channel.queue_declare(queue=queue, passive=True)
            except NotFound:
                return None
        return int(declared.message_count), int(declared.consumer_count)


@pytest.fixture(scope="module")
def rabbit(broker_url, tmp_path_factory, session_pids) -> Iterator[Rabbit]:
    """``rabbit_app`` with its worker and beat, started by its first submit."""
    worker = f"rabbit{uuid.uuid4().hex[:6]}"
    logs = tmp_path_factory.mktemp("rabbit")
    with helpers.rabbitmq_vhost("rabbit") as amqp, pytest.MonkeyPatch.context() as patch:
        patch.delenv("FLASK_APP", raising=False)
        patch.delenv("FLASK_EXECUTE_APP", raising=False)
        for name, value in dict(BROKER=amqp, BACKEND=broker_url, WORKER=worker).items():
            patch.setenv(f"RABBIT_{name}", value)
        patch.setenv("RABBIT_LOG_DIR", str(logs))
        app = rabbit_app.create_app()
        celery: Celery = app.extensions["celery"]
        backend = redis.Redis.from_url(broker_url)
        backend.delete(rabbit_app.TICKS)
        try:
            assert celery.submit(rabbit_app.add, 1, 2).result(timeout=60) == 3
            session_pids.update(celery.processes.values())
            yield Rabbit(app, celery, amqp, worker, backend)
        finally:
            pids = set(celery.processes.values())
            celery.stop(timeout=10)
            session_pids.difference_update(pids)
            backend.delete(rabbit_app.TICKS, lock_key(celery.celery_app))


@pytest.fixture
def key(rabbit: Rabbit) -> Iterator[str]:
    """A key prefix of the test's own in the result backend, cleaned up after."""
    prefix = f"rabbit-test:{uuid.uuid4().hex}"
    yield prefix
    rabbit.backend.delete(prefix, *rabbit.backend.keys(f"{prefix}:*"))


def test_the_first_submit_started_a_worker_and_beat_on_rabbitmq(rabbit):
    assert sorted(rabbit.celery.processes) == sorted(["beat", rabbit.worker])
    assert rabbit.celery.celery_app.conf.broker_url == rabbit.amqp
    # the app's queue is in RabbitMQ (the run's vhost), with the worker consuming it
    queued = rabbit.queued()
    assert queued is not None and queued[1] == 1


def test_submit_and_map(rabbit):
    future = rabbit.celery.submit(rabbit_app.add, 2, 3)
    assert future.result(timeout=30) == 5 and future.state == states.SUCCESS
    pool = rabbit.celery.map(rabbit_app.add, [1, 10], [2, 20], [3, 30])
    assert pool.result(timeout=30) == [11, 22, 33]
    # a second app instance on the same broker and backend reads the result
    assert rabbit.celery.get(future.id).result(timeout=10) == 5


def test_a_registered_task(rabbit):
    future = rabbit.celery.task[rabbit_app.REGISTERED].delay(21)
    assert future.result(timeout=30) == 42


def test_progress(rabbit, key):
    future = rabbit.celery.submit(rabbit_app.steps, 2, key)
    try:
        wait_for(lambda: future.progress is not None and future.progress.done == 2, 30, 0.05)
        assert future.progress.total == 3 and future.progress.meta == {"stage": "working"}
        assert not future.done() and future.state == "PROGRESS"
    finally:
        rabbit.backend.rpush(key, "go")
    assert future.result(timeout=30) == 2


def test_cancel(rabbit, key):
    future = rabbit.celery.submit(rabbit_app.until_cancelled, key)
    started = wait_for(lambda: rabbit.backend.lindex(f"{key}:started", 0), 30, message="start")
    assert future.cancel() is True
    assert future.cancelled() and future.state == states.REVOKED
    with pytest.raises(cf.CancelledError):
        future.result(timeout=0)
    cleaned = wait_for(lambda: rabbit.backend.get(f"{key}:cleanup"), 30, message="cleanup")
    assert cleaned == started  # the task saw current_task.cancelled and stopped itself
    result = rabbit.celery.celery_app.AsyncResult(future.id)
    wait_for(lambda: result.state == states.REVOKED, 30, message="REVOKED in the backend")


def test_status_in_process_and_on_the_command_line(rabbit):
    status = rabbit.celery.status()
    node = next(name for name in status if name.startswith(f"{rabbit.worker}@"))
    assert status == {node: "OK"}
    out = helpers.run_command([FLASK, "celery", "status", "-j"], FLASK_APP=APP)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f'"{node}": "OK"' in out.stdout


def test_beat_runs_the_schedule_with_its_lock_in_the_redis_backend(rabbit):
    ran = wait_for(lambda: rabbit.backend.lindex(rabbit_app.TICKS, 0), 30, 0.1, "a tick")
    assert ran.decode().startswith(f"{rabbit.worker}@")
    # one beat per broker: the lock is a key of the result backend, held by this host
    holder = rabbit.backend.get(lock_key(rabbit.celery.celery_app))
    assert holder is not None and holder.decode().startswith(f"{socket.gethostname()}:")


# -- what is refused ---------------------------------------------------------------------


def _plain_app(amqp: str, **config: object) -> Flask:
    app = Flask(f"rabbit_plain_{uuid.uuid4().hex[:6]}")
    app.config.update(
        SECRET_KEY="rabbit-secret-key-of-32-bytes-or-more",
        CELERY_BROKER_URL=amqp,
        CELERY_FLOWER=False,
        **config,
    )
    return app


def test_without_a_result_backend_submit_names_the_key_and_sends_nothing(rabbit, tmp_path):
    queue = f"unserved-{uuid.uuid4().hex[:8]}"
    app = _plain_app(rabbit.amqp, CELERY_LOG_DIR=str(tmp_path), CELERY_TASK_DEFAULT_QUEUE=queue)
    celery = Celery(app)
    for send in (
        lambda: celery.submit(rabbit_app.add, 1, 2),
        lambda: celery.map(rabbit_app.add, [1, 2]),
    ):
        with pytest.raises(ConfigurationError, match="set CELERY_RESULT_BACKEND") as caught:
            send()
        assert "nothing was sent" in str(caught.value)
    assert celery.processes == {}  # nothing was started for it either
    assert rabbit.queued(queue) in (None, (0, 0))


@pytest.mark.parametrize("backend", ["rpc://", "amqp://guest:guest@127.0.0.1:5672//"])
def test_a_message_result_backend_is_refused_at_init_app(rabbit, backend):
    app = _plain_app(rabbit.amqp, CELERY_RESULT_BACKEND=backend)
    with pytest.raises(ConfigurationError, match="CELERY_RESULT_BACKEND is") as caught:
        Celery(app)
    assert "Use a Redis result backend" in str(caught.value)


def test_the_beat_lock_is_in_the_redis_backend_when_the_broker_is_not_redis(tmp_path):
    app = _plain_app(
        "amqp://guest:guest@127.0.0.1:5672//",
        CELERY_RESULT_BACKEND="redis://127.0.0.1:6379/3",
        CELERY_START_LOCAL_WORKERS=False,
    )
    celery_app = Celery(app).celery_app
    assert lock_url(celery_app) == "redis://127.0.0.1:6379/3"
    assert isinstance(make_lock(celery_app, str(tmp_path / "schedule")), RedisBeatLock)
