"""Issue 8, items 5-7: nothing replayed, nothing oversized, against a real worker.

Messages are captured from a real Redis queue (published by ``submit`` to a queue no
worker serves), changed the way an attacker with access to the broker would change
them, and pushed to the queue of a real worker of ``tests.apps.wire_app`` (token max
age 3 s, payload cap 1 MiB). The worker must fail the task with ``SignatureError``
before unpickling anything: the function's side-effect file and the argument's
tripwire file stay absent.
"""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from celery import states
from flask import Flask

from flask_execute import Celery, SerializationError, SignatureError
from tests import helpers


@pytest.fixture(scope="module")
def wire_app(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory, session_pids: set[int]
) -> Iterator[ModuleType]:
    """``tests.apps.wire_app``, served by one real worker on the queue ``wire``."""
    import tests.apps.wire_app as module

    log = Path(tmp_path_factory.mktemp("wire-worker")) / "worker.log"
    app = module.celery.celery_app
    with helpers.session_worker(
        "tests.apps.wire_app:app",
        app,
        broker_url,
        log,
        session_pids,
        name="wire",
        queues="wire",
        concurrency=1,
    ):
        yield module


@pytest.fixture
def client(broker_url: str) -> redis.Redis:
    return redis.Redis.from_url(broker_url)


@pytest.fixture
def hold() -> str:
    """A queue of this test's own that no worker serves: submitted messages wait there."""
    return f"wire-hold-{uuid.uuid4().hex[:8]}"


def capture(client: redis.Redis, queue: str) -> dict[str, Any]:
    """Take the one message waiting in ``queue`` (kombu's Redis transport: a list)."""
    raw = helpers.wait_for(lambda: client.rpop(queue), timeout=10, message=f"a message in {queue}")
    assert client.llen(queue) == 0
    message: dict[str, Any] = json.loads(raw)
    assert message["headers"]["task"] == "flask_execute.run"
    return message


def token_of(message: dict[str, Any]) -> str:
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return str(args[0])


def push(
    client: redis.Redis,
    message: dict[str, Any],
    *,
    task_id: str | None = None,
    token: str | None = None,
) -> str:
    """Put a (changed) copy of ``message`` on the worker's queue; return its task id."""
    message = copy.deepcopy(message)
    if task_id is not None:
        message["headers"]["id"] = message["properties"]["correlation_id"] = task_id
    if token is not None:
        body = json.loads(base64.b64decode(message["body"]))
        body[0][0] = token
        message["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    message["properties"]["delivery_tag"] = uuid.uuid4().hex
    message["properties"]["delivery_info"]["routing_key"] = "wire"
    client.lpush("wire", json.dumps(message))
    return str(message["headers"]["id"])


def stored(client: redis.Redis, task_id: str) -> dict[str, Any]:
    """The final state the worker stored for ``task_id`` (waits for it; the submitting
    side may have stored a PENDING record first)."""

    def final() -> dict[str, Any] | None:
        raw = client.get(f"celery-task-meta-{task_id}")
        meta = json.loads(raw) if raw else None
        return meta if meta and meta["status"] in states.READY_STATES else None

    found: dict[str, Any] = helpers.wait_for(final, timeout=15, message="a final result")
    return found


def assert_refused(meta: dict[str, Any], reason: str) -> None:
    assert meta["status"] == "FAILURE", meta
    assert meta["result"]["exc_type"] == "SignatureError", meta
    assert reason in meta["result"]["exc_message"][0], meta


def test_a_message_replayed_under_another_id_is_refused_unrun(wire_app, client, hold, tmp_path):
    ran, unpickled = tmp_path / "ran", tmp_path / "unpickled"
    future = wire_app.celery.submit(
        wire_app.touch, str(ran), wire_app.Tripwire(str(unpickled)), queue=hold
    )
    message = capture(client, hold)
    replay_id = push(client, message, task_id=str(uuid.uuid4()))
    assert_refused(stored(client, replay_id), f"made for task {future.id!r}")
    with pytest.raises(SignatureError, match="another task id"):
        wire_app.celery.get(replay_id).result(timeout=10)
    assert not ran.exists() and not unpickled.exists()
    # The very same message under its own id is genuine: it runs.
    push(client, message)
    assert future.result(timeout=15) == str(ran)
    assert ran.exists()


def test_an_expired_message_is_refused_unrun(wire_app, client, hold, tmp_path):
    ran, unpickled = tmp_path / "ran", tmp_path / "unpickled"
    signed = time.time()
    future = wire_app.celery.submit(
        wire_app.touch, str(ran), wire_app.Tripwire(str(unpickled)), queue=hold
    )
    message = capture(client, hold)
    # The message's age is what is tested: it must be older than the app's max age
    # (plus one second, the resolution of the signed time) when the worker sees it.
    helpers.wait_for(lambda: time.time() > signed + wire_app.MAX_AGE + 1.5, timeout=10)
    push(client, message)
    assert_refused(stored(client, future.id), "token expired")
    with pytest.raises(SignatureError, match="CELERY_TOKEN_MAX_AGE"):
        future.result(timeout=10)
    assert not ran.exists() and not unpickled.exists()


def test_an_unknown_token_version_is_refused_naming_it(wire_app, client, hold, tmp_path):
    ran = tmp_path / "ran"
    future = wire_app.celery.submit(wire_app.touch, str(ran), queue=hold)
    message = capture(client, hold)
    version, _, rest = token_of(message).partition(".")
    assert version == "v3"
    push(client, message, token=f"v9.{rest}")
    assert_refused(stored(client, future.id), "token format v9")
    with pytest.raises(SignatureError, match="Upgrade the workers and the web processes"):
        future.result(timeout=10)
    assert not ran.exists()


def test_a_countdown_task_runs_when_due_though_older_than_the_max_age(wire_app):
    countdown = wire_app.MAX_AGE + 2
    sent = time.time()
    ran_at = wire_app.celery.submit(wire_app.now, countdown=countdown).result(timeout=30)
    # It ran when due, longer after signing than the max age: the age counts from the eta.
    assert ran_at - sent >= countdown - 1 > wire_app.MAX_AGE


def test_a_retry_keeps_its_id_and_is_re_signed(wire_app, tmp_path):
    marker = tmp_path / "tried"
    countdown = wire_app.MAX_AGE + 2  # without re-signing, the retry would be stale
    future = wire_app.celery.submit(wire_app.retry_once, str(marker), countdown)
    assert future.result(timeout=30) == 1
    assert marker.exists()


def test_a_result_moved_to_another_tasks_key_is_refused(wire_app, client, hold):
    source = wire_app.celery.submit(wire_app.add, 1, 2)
    assert source.result(timeout=15) == 3
    target = wire_app.celery.submit(wire_app.add, 20, 22, queue=hold)  # never runs
    meta = json.loads(client.get(f"celery-task-meta-{source.id}"))
    meta["task_id"] = target.id
    key = f"celery-task-meta-{target.id}"
    client.set(key, json.dumps(meta))
    client.publish(key, json.dumps(meta))
    with pytest.raises(SignatureError, match=f"made for task {source.id!r}"):
        target.result(timeout=10)
    client.delete(hold)


def test_a_result_over_the_cap_fails_the_future_clearly(wire_app):
    future = wire_app.celery.submit(wire_app.big, 2 * wire_app.MAX_PAYLOAD)
    with pytest.raises(SerializationError, match=r"return value .* is 2\.0 MiB serialized"):
        future.result(timeout=15)
    assert f"CELERY_MAX_PAYLOAD ({wire_app.MAX_PAYLOAD} bytes)" in str(future.exception())


def test_a_32_mib_argument_is_refused_at_submit_and_nothing_is_published(broker_url, client):
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
        CELERY_BROKER_URL=broker_url,
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_DEFAULT_QUEUE="never-sent-large",
    )
    celery = Celery(app)
    payload = b"\0" * (32 * 2**20)
    with pytest.raises(SerializationError) as caught:
        celery.submit(print, 1, payload)
    message = str(caught.value)
    assert "positional argument 1" in message and "is 32.0 MiB" in message
    assert "CELERY_MAX_PAYLOAD (16777216 bytes)" in message
    with pytest.raises(SerializationError, match="keyword argument 'blob'"):
        celery.map(print, [1], [2], blob=payload)  # no call of the map is sent either
    assert client.llen("never-sent-large") == 0
    assert celery.state().futures.pending_ids() == []


def test_the_cap_and_the_binding_hold_in_eager_mode():
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
        CELERY_ALWAYS_EAGER=True,
        CELERY_MAX_PAYLOAD=1024,
    )
    celery = Celery(app)
    assert celery.submit(len, b"x" * 512).result() == 512
    with pytest.raises(SerializationError, match="positional argument 0"):
        celery.submit(len, b"x" * 2048)
    with pytest.raises(SerializationError, match="return value"):
        celery.submit(bytes, 2048).result()
