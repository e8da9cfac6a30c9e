"""Deduplication (``key=``): one task per key while it is queued or running, against
the real worker of ``tests.apps.basic`` and the run's Redis database.

Runs are counted in that database by the functions of ``tests.apps.dedup``.
"""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import states
from flask import Flask

from flask_execute import BrokerUnavailable, Celery, ConfigurationError
from flask_execute.dedup import KEPT, redis_key
from tests import helpers
from tests.apps import dedup, worker_app_config
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def client(broker_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(broker_url)
    yield c
    c.close()


@pytest.fixture
def names() -> tuple[str, str]:
    """``(key, counter)``: a fresh deduplication key and a fresh run counter."""
    tag = uuid.uuid4().hex
    return f"report:{tag}", f"runs-{tag}"


def _runs(client: redis.Redis, counter: str) -> int:
    return int(client.get(counter) or 0)


def _held(celery: Any, client: redis.Redis, key: str) -> str | None:
    value = client.get(redis_key(celery.state(), key))
    return None if value is None else value.decode()


def test_a_second_submission_while_running_gets_the_same_task(celery, client, names, gate):
    key, counter = names
    release, gate_key = gate
    first = celery.options(key=key).submit(dedup.counted, counter, gate_key, "done")
    wait_for(lambda: _runs(client, counter) == 1, message="the first call running")
    second = celery.options(key=key).submit(dedup.counted, counter, None, "never")
    assert second.id == first.id
    assert _held(celery, client, key) == first.id
    active = celery.celery_app.control.inspect(timeout=3).active() or {}
    (running,) = [t for tasks in active.values() for t in tasks if t["id"] == first.id]
    # inspect shows the call, not the extension's keywords (the key rides unseen)
    assert running["args"].startswith("counted(") and running["kwargs"] == "{}"
    release()
    assert second.result(timeout=30) == "done" and first.result(timeout=30) == "done"
    assert _runs(client, counter) == 1


def test_a_second_submission_while_queued_gets_the_same_task(celery, client, names):
    key, counter = names
    first = celery.options(key=key, countdown=3).submit(dedup.counted, counter, None, 1)
    second = celery.options(key=key).submit(dedup.counted, counter, None, 2)
    assert second.id == first.id and not first.done()
    assert _runs(client, counter) == 0  # still queued when the second came
    assert second.result(timeout=30) == 1
    assert _runs(client, counter) == 1


def test_after_the_task_finishes_the_key_is_free(celery, client, names):
    key, counter = names
    first = celery.options(key=key).submit(dedup.counted, counter, None, "a")
    assert first.result(timeout=30) == "a"
    wait_for(lambda: _held(celery, client, key) is None, timeout=5, message="the key freed")
    second = celery.options(key=key).submit(dedup.counted, counter, None, "b")
    assert second.id != first.id and second.result(timeout=30) == "b"
    assert _runs(client, counter) == 2


def test_a_submission_without_a_key_never_reaches_the_key_machinery(celery, monkeypatch):
    import flask_execute.calls

    def refuse(*args: Any) -> None:
        raise AssertionError("a call without a key took the keyed path")

    monkeypatch.setattr(flask_execute.calls, "send_keyed", refuse)
    assert celery.submit(dedup.counted, f"runs-{uuid.uuid4().hex}", None, 5).result(30) == 5
    with pytest.raises(AssertionError, match="keyed path"):
        celery.options(key="any").submit(dedup.counted, "x")


def test_the_key_has_a_safety_expiry(celery, client, names, gate):
    key, counter = names
    release, gate_key = gate
    future = celery.options(key=key).submit(dedup.counted, counter, gate_key)
    ttl = client.pttl(redis_key(celery.state(), key))
    assert 0 < ttl <= (celery.celery_app.conf.result_expires.total_seconds() + 1) * 1000
    release()
    future.result(timeout=30)


def test_key_keep_names_the_finished_task_for_a_while(celery, client, names):
    key, counter = names
    first = celery.options(key=key, key_keep=30).submit(dedup.counted, counter, None, "kept")
    assert first.result(timeout=30) == "kept"
    again = celery.options(key=key, key_keep=30).submit(dedup.counted, counter, None, "new")
    assert again.id == first.id and again.result(timeout=5) == "kept"
    assert _held(celery, client, key) == first.id + KEPT
    assert 0 < client.pttl(redis_key(celery.state(), key)) <= 30_000
    assert _runs(client, counter) == 1


def test_after_key_keep_the_key_is_free(celery, client, names):
    key, counter = names
    first = celery.options(key=key, key_keep=0.5).submit(dedup.counted, counter, None, 1)
    assert first.result(timeout=30) == 1
    wait_for(lambda: _held(celery, client, key) is None, timeout=5, message="the keep over")
    second = celery.options(key=key, key_keep=0.5).submit(dedup.counted, counter, None, 2)
    assert second.id != first.id and second.result(timeout=30) == 2


def test_a_failed_task_frees_the_key_even_with_key_keep(celery, client, names):
    key, counter = names
    first = celery.options(key=key, key_keep=30).submit(dedup.counted_failure, counter, "no")
    with pytest.raises(ValueError, match="no"):
        first.result(timeout=30)
    wait_for(lambda: _held(celery, client, key) is None, timeout=5, message="the key freed")
    second = celery.options(key=key).submit(dedup.counted, counter, None, "yes")
    assert second.id != first.id and second.result(timeout=30) == "yes"
    assert _runs(client, counter) == 2


def test_cancel_frees_the_key(celery, client, names, gate):
    key, counter = names
    _release, gate_key = gate
    first = celery.options(key=key).submit(dedup.counted, counter, gate_key)
    wait_for(lambda: _runs(client, counter) == 1, message="the first call running")
    assert first.cancel()
    wait_for(lambda: _held(celery, client, key) is None, timeout=5, message="the key freed")
    second = celery.options(key=key).submit(dedup.counted, counter, None, "after")
    assert second.id != first.id and second.result(timeout=30) == "after"


@pytest.mark.parametrize("status", [states.REVOKED, states.SUCCESS, None])
def test_a_key_nothing_freed_is_taken_over_once_its_task_is_over(celery, client, names, status):
    # A task revoked before it ran (or a lost worker) never freed its key: its stored
    # state is ready (or gone), so the next submission takes the key over.
    key, counter = names
    stale = str(uuid.uuid4())
    client.set(redis_key(celery.state(), key), stale, ex=60)
    if status == states.REVOKED:
        celery.celery_app.backend.mark_as_revoked(stale, "revoked unrun")
    elif status == states.SUCCESS:
        celery.celery_app.backend.store_result(stale, {"x": 1}, status)
    future = celery.options(key=key).submit(dedup.counted, counter, None, "fresh")
    assert future.id != stale and future.result(timeout=30) == "fresh"
    assert _runs(client, counter) == 1


def test_a_key_held_by_a_pending_task_is_not_taken_over(celery, client, names):
    key, counter = names
    first = celery.options(key=key, countdown=2).submit(dedup.counted, counter, None, 1)
    celery.celery_app.backend.store_result(first.id, None, states.STARTED)
    second = celery.options(key=key).submit(dedup.counted, counter, None, 2)
    assert second.id == first.id and second.result(timeout=30) == 1


def _second_process(key: str, counter: str, gate_key: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.apps.dedup", key, counter, gate_key],
        cwd=helpers.ROOT,
        env=helpers.test_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_concurrent_submissions_from_threads_and_another_process_make_one_task(
    celery, client, names, gate
):
    key, counter = names
    release, gate_key = gate
    other = _second_process(key, counter, gate_key)
    try:
        helpers.read_line(other, "ready")
        start = threading.Barrier(9)

        def submit(_: int) -> str:
            start.wait(timeout=10)
            return celery.options(key=key).submit(dedup.counted, counter, gate_key, "one").id

        with cf.ThreadPoolExecutor(8) as pool:
            results = pool.map(submit, range(8))
            assert other.stdin is not None
            other.stdin.write("go\n")
            other.stdin.flush()
            start.wait(timeout=10)
            ids = list(results)
        other_id = helpers.read_line(other, "id:")
        assert other.wait(timeout=30) == 0
    finally:
        if other.poll() is None:
            helpers.stop_process_tree(other)  # type: ignore[arg-type]
    assert len(set(ids)) == 1 and other_id == ids[0]
    wait_for(lambda: _runs(client, counter) == 1, message="the one call running")
    release()
    assert celery.get(ids[0]).result(timeout=30) in ("one", "second process")
    assert _runs(client, counter) == 1


def test_a_keyed_call_in_a_batch_leaves_at_once_and_is_deduplicated(celery, client, names):
    key, counter = names
    with celery.batch():
        first = celery.options(key=key, countdown=3).submit(dedup.counted, counter, None, 1)
        second = celery.options(key=key).submit(dedup.counted, counter, None, 2)
        assert second.id == first.id
        assert _held(celery, client, key) == first.id  # taken before the block ended
    assert first.result(timeout=30) == 1 and _runs(client, counter) == 1


def test_a_streamed_call_with_a_key_is_read_through_either_future(celery, client, names, gate):
    key, counter = names
    release, gate_key = gate
    first = celery.options(key=key).submit(dedup.counted_stream, counter, gate_key, 3)
    second = celery.options(key=key).submit(dedup.counted_stream, counter, gate_key, 3)
    assert second is first
    release()
    assert list(second.stream()) == [0, 1, 2]
    assert _runs(client, counter) == 1


@pytest.fixture
def make_app(broker_url: str) -> Iterator[Any]:
    made: list[Celery] = []

    def make(**config: Any) -> Celery:
        app = Flask(f"dedup-{uuid.uuid4().hex[:8]}")
        app.config.update(worker_app_config(f"dedup-{uuid.uuid4().hex}", "dedup"))
        app.config.update(config)
        celery = Celery(app)
        made.append(celery)
        return celery

    yield make
    for celery in made:
        celery.stop(timeout=5)


def test_a_failed_publish_releases_the_key(make_app, broker_url, client, names):
    key, counter = names
    celery = make_app(
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        CELERY_RESULT_BACKEND=broker_url,
        CELERY_SUBMIT_TIMEOUT=1,
    )
    with pytest.raises(BrokerUnavailable) as info:
        celery.options(key=key).submit(dedup.counted, counter)
    assert not info.value.may_arrive
    assert _held(celery, client, key) is None


def test_a_backend_that_is_not_redis_fails_clearly_with_nothing_published(make_app, client, names):
    key, counter = names
    celery = make_app(CELERY_RESULT_BACKEND="cache+memory://")
    queue = celery.celery_app.conf.task_default_queue
    with pytest.raises(ConfigurationError, match="option key needs a Redis result backend"):
        celery.options(key=key).submit(dedup.counted, counter)
    assert client.llen(queue) == 0
    assert celery.submit(dedup.counted, counter) is not None  # without a key: fine
    assert client.llen(queue) == 1
    client.delete(queue)


EAGER_RUNS: list[int] = []


def call(n: int) -> int:
    """Runs in this process in eager mode (pickled by reference: the same list)."""
    EAGER_RUNS.append(n)
    return n


def test_in_eager_mode_key_keep_holds_the_finished_future_in_process():
    app = Flask("dedup-eager")
    app.config.update(
        CELERY_ALWAYS_EAGER=True,
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    )
    celery = Celery(app)
    runs = EAGER_RUNS
    runs.clear()
    first = celery.options(key="k", key_keep=30).submit(call, 1)
    assert celery.options(key="k", key_keep=30).submit(call, 2) is first
    assert first.result() == 1 and runs == [1]
    assert celery.options(key="other").submit(call, 3).result() == 3
    assert celery.options(key="other").submit(call, 4).result() == 4  # no keep: runs
    assert runs == [1, 3, 4]
