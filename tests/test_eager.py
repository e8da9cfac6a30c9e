"""Eager mode: the same API in-process, with no broker and no workers."""

from __future__ import annotations

import concurrent.futures as cf

import pytest
from celery import states
from flask import Flask, current_app

from flask_execute import Celery, SerializationError, current_task

CLOSED_BROKER = "redis://127.0.0.1:1/0"  # nothing listens: eager mode must not care


@pytest.fixture(params=["CELERY_ALWAYS_EAGER", "CELERY_TASK_ALWAYS_EAGER"])
def celery(request):
    app = Flask("eager-app")
    app.config.update(
        {
            request.param: True,
            "CELERY_BROKER_URL": CLOSED_BROKER,
            "SECRET_KEY": "test-secret-key-of-32-bytes-or-more",
        }
    )
    return Celery(app)


def add(x, y):
    return x + y


def test_submit_map_and_results(celery):
    future = celery.submit(add, 1, 2)
    assert future.done() and not future.running()
    assert future.result(timeout=1) == 3 and future.state == states.SUCCESS
    assert celery.submit(add, x=1, y=2).result() == 3
    assert celery.map(add, [1], [3], [5], y=2).result(timeout=1) == [3, 5, 7]
    assert celery.submit(lambda: current_app.name).result() == "eager-app"


def test_exceptions_keep_type_message_and_traceback(celery):
    def fail():
        raise KeyError("gone")

    future = celery.submit(fail)
    with pytest.raises(KeyError, match="gone") as info:
        future.result()
    remote = str(info.value.__cause__)
    assert "in fail" in remote and "KeyError: 'gone'" in remote
    assert "pluggy" not in remote and "flask_execute/tasks.py" not in remote
    assert future.state == states.FAILURE


def test_current_task_and_progress(celery):
    updates = []

    def work():
        assert current_task
        current_task.update_state(state="PROGRESS", meta={"half": True})
        return current_task.id

    # progress callbacks only exist once the future does, so record through the proxy
    future = celery.submit(work)
    assert future.result() == future.id
    assert not current_task

    def watched():
        # the function travels by value, as to a worker: `updates` here is a copy
        current_task.update_state(state="PROGRESS", meta={"n": 1})
        updates.append(current_task.id)
        return len(updates)

    assert celery.submit(watched).result() == 1 and updates == []


def test_progress_reaches_the_future_in_eager_mode(celery):
    seen = []
    tracker = celery.state().futures
    original = tracker.deliver

    def spy(task_id, meta):
        seen.append(meta["status"])
        original(task_id, meta)

    tracker.deliver = spy
    try:
        celery.submit(lambda: current_task.update_state(state="PROGRESS", meta=1)).result()
    finally:
        del tracker.deliver
    assert seen == ["PROGRESS"]


def test_callbacks_and_cf_helpers(celery):
    calls = []
    future = celery.submit(add, 2, 2)
    future.add_done_callback(lambda f: calls.append(f.result()))
    future.add_done_callback(lambda: calls.append("no-arg"))
    assert calls == [4, "no-arg"]
    assert [f.result() for f in cf.as_completed([future])] == [4]
    assert future.cancel() is False


def test_unserializable_arguments_fail_like_on_a_worker(celery):
    import threading

    with pytest.raises(SerializationError, match="positional argument 0"):
        celery.submit(print, threading.Lock())


def test_a_batched_map_runs_in_process_call_by_call(celery):
    def work(x):
        current_task.update_state(state="PROGRESS", meta={"x": x, "id": current_task.id})
        if x == 2:
            raise ValueError("two")
        return x * 10

    seen = []
    pool = celery.options(chunksize=3).map(work, *range(5))
    assert pool.done() and len({f.id.rsplit(".", 1)[0] for f in pool}) == 2
    assert [f.result() for i, f in enumerate(pool) if i != 2] == [0, 10, 30, 40]
    with pytest.raises(ValueError, match="two"):
        pool[2].result()
    # progress of a call reached that call's Future, under the call's own id
    later = celery.options(chunksize=2).map(work, 5, 6)
    assert [f.state for f in later] == [states.SUCCESS] * 2
    pool[0].add_progress_callback(seen.append)  # after the end: no replay, no error
    assert seen == []
    assert list(celery.starmap(add, ((i, i) for i in range(600))).results())[-1] == 1198


def test_a_call_of_a_batched_map_runs_under_its_own_id_in_eager_mode(celery):
    def work(x):
        current_task.update_state(state="PROGRESS", meta={"x": x})
        return current_task.id

    pool = celery.options(chunksize=2).map(work, 1, 2, 3)
    assert pool.result() == pool.id
    assert celery.state().futures.pending_ids() == []
