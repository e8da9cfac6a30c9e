"""Flower shows calls, not tokens: what the published message, the worker's task events
(what Flower reads) and ``celery inspect active`` carry, with ``CELERY_SHOW_VALUES`` on
(``tests.apps.shown_app.app``) and off (``hidden_app``). Real Redis, real workers.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

import tests.apps.shown_app as sa
from tests import helpers

#: A queue no worker reads: its messages stay in Redis to be read as published.
PARKED = "shown-parked"


@pytest.fixture(scope="module")
def workers(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory, session_pids: set[int]
) -> Iterator[None]:
    """One worker per app, each on the app's own queue."""
    log_dir = Path(tmp_path_factory.mktemp("shown"))
    with (
        helpers.session_worker(
            "tests.apps.shown_app:app", sa.celery.celery_app, broker_url,
            log_dir / "shown.log", session_pids, name="shown", queues="shown", concurrency=1,
        ),
        helpers.session_worker(
            "tests.apps.shown_app:hidden_app", sa.hidden.celery_app, broker_url,
            log_dir / "hidden.log", session_pids, name="hidden", queues="hidden", concurrency=1,
        ),
    ):  # fmt: skip
        yield


@pytest.fixture
def parked(broker_url: str) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Reads the messages published to :data:`PARKED`, oldest first, from Redis as sent."""
    client = redis.Redis.from_url(broker_url)
    client.delete(PARKED)
    yield lambda: [json.loads(raw) for raw in reversed(client.lrange(PARKED, 0, -1))]
    client.delete(PARKED)
    client.close()


@contextmanager
def task_events(celery_app: Any) -> Iterator[list[dict[str, Any]]]:
    """The task events the app's workers send while the block runs (Flower's source)."""
    events: list[dict[str, Any]] = []
    ready = threading.Event()
    with celery_app.connection_for_read() as conn:
        receiver = celery_app.events.Receiver(conn, handlers={"*": events.append})
        receiver.on_consume_ready = lambda *args, **kwargs: ready.set()
        thread = threading.Thread(target=receiver.capture, kwargs={"wakeup": False}, daemon=True)
        thread.start()
        try:
            assert ready.wait(10), "the event receiver did not start"
            probe = f"probe-{uuid.uuid4().hex}"

            def subscribed() -> bool:  # Redis delivers events only once it has subscribed
                with celery_app.events.default_dispatcher() as dispatcher:
                    dispatcher.send("worker-probe", probe=probe)
                return any(e.get("probe") == probe for e in events)

            helpers.wait_for(subscribed, timeout=10, interval=0.2, message="events arriving")
            yield events
        finally:
            receiver.should_stop = True
            thread.join(10)
    assert not thread.is_alive()


def _event(events: list[dict[str, Any]], kind: str, task_id: str) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [e for e in events if e["type"] == kind and e.get("uuid") == task_id]

    return helpers.wait_for(found, timeout=20, message=f"a {kind} event for {task_id}")[0]


# -- what is published ----------------------------------------------------------------


def test_a_published_call_shows_the_function_and_its_arguments(parked):
    sa.celery.options(queue=PARKED).submit(sa.add, 1, y="two")
    sa.celery.options(queue=PARKED).submit(sa.add, "x" * 5000, list(range(1000)))
    first, long = parked()
    assert first["headers"]["argsrepr"] == "add(1, y='two')"
    assert first["headers"]["kwargsrepr"] == "{'y': 'two'}"
    assert first["headers"]["task"] == "flask_execute.run"  # the token's task, named by shadow
    # reprlib cuts large values: a few dozen characters, never the 5000
    assert long["headers"]["argsrepr"].startswith("add('xxxx")
    assert "..." in long["headers"]["argsrepr"] and len(long["headers"]["argsrepr"]) < 200


def test_a_chunk_shows_its_size_and_its_first_calls(parked):
    sa.celery.options(queue=PARKED, chunksize=3).map(sa.add, [1, 2], [3, 4], [5, 6])
    (chunk,) = parked()
    assert chunk["headers"]["argsrepr"] == "<3 calls> add(1, 2), add(3, 4), …"
    assert chunk["headers"]["kwargsrepr"] == "{}"


def test_hidden_values_never_reach_the_message_in_clear(parked):
    sa.hidden.options(queue=PARKED).submit(sa.held, "a-key", secret="hunter2-password")
    sa.hidden.options(queue=PARKED, chunksize=2).map(sa.add, ["hunter2-x", 1], [2, 3])
    call, chunk = parked()
    assert call["headers"]["argsrepr"] == "held(…)"
    assert call["headers"]["kwargsrepr"] == "{…}"
    assert chunk["headers"]["argsrepr"] == "<2 calls> add(…), add(…)"
    for message in (call, chunk):  # the body is the signed token, base64 inside base64
        assert "hunter2" not in json.dumps(message)


# -- what the worker reports: task events and inspect ---------------------------------


def test_events_show_the_call_and_its_result(workers):
    with task_events(sa.celery.celery_app) as events:
        future = sa.celery.submit(sa.add, 20, 22)
        assert future.result(timeout=20) == 42
        received = _event(events, "task-received", future.id)
        succeeded = _event(events, "task-succeeded", future.id)
    assert received["args"] == "add(20, 22)"
    assert received["name"] == "tests.apps.shown_app.add"
    assert succeeded["result"] == "42"


def test_events_show_a_failure_with_the_users_own_frames(workers):
    with task_events(sa.celery.celery_app) as events:
        future = sa.celery.submit(sa.fail, "input")
        with pytest.raises(ValueError, match="bad input"):
            future.result(timeout=20)
        failed = _event(events, "task-failed", future.id)
    assert "ValueError: bad input" in failed["exception"]
    trace = failed["traceback"]
    assert "tests/apps/shown_app.py" in trace and "in fail" in trace, trace
    assert 'raise ValueError(f"bad {word}")' in trace
    # the user's frames come first, without flask_execute's and pluggy's before them
    user_part = trace.split("tests/apps/shown_app.py")[0]
    assert "pluggy" not in user_part and "flask_execute/tasks.py" not in user_part, trace


def test_events_hide_values_when_asked(workers):
    with task_events(sa.hidden.celery_app) as events:
        future = sa.hidden.submit(sa.add, "hunter2-", "password")
        assert future.result(timeout=20) == "hunter2-password"
        received = _event(events, "task-received", future.id)
        succeeded = _event(events, "task-succeeded", future.id)
    assert received["args"] == "add(…)"
    assert succeeded["result"] == "…"
    assert "hunter2" not in json.dumps([received, succeeded])


@pytest.mark.parametrize(
    ("ext", "shown"),
    [("celery", "held('{key}')"), ("hidden", "held(…)")],
)
def test_inspect_active_shows_the_call_not_the_token(workers, broker_url, ext, shown):
    celery = getattr(sa, ext)
    key = f"release-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(broker_url)
    try:
        future = celery.submit(sa.held, key)
        pool = celery.options(chunksize=2).map(sa.held, [key], [key])

        def running() -> list[dict[str, Any]]:
            replies = celery.inspect.active(timeout=1) or {}
            tasks = [t for found in replies.values() for t in found]
            return [t for t in tasks if t["id"] == future.id]

        (task,) = helpers.wait_for(running, timeout=20, message="the call among active tasks")
        assert task["args"] == shown.format(key=key)
        assert task["name"] == "tests.apps.shown_app.held"
        assert key not in task["kwargs"]
        client.rpush(key, "go")

        client.rpush(key, "go", "go", "go")
        assert future.result(timeout=20) == "released"
        assert pool.result(timeout=20) == ["released", "released"]
    finally:
        client.rpush(key, "go", "go", "go")
        client.expire(key, 60)
        client.close()
