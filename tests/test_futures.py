"""The guide's submission and Future examples, against a real worker and Redis."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import threading

import pytest
from celery import states

from flask_execute import Future, FuturePool, UnknownTaskError, current_task
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)


def test_submit_forms_of_the_guide(celery, m):
    assert celery.submit(m.add, 1, 2).result(timeout=10) == 3
    assert celery.submit(m.add, 1, y=2).result(timeout=10) == 3
    assert celery.submit(m.add, x=1, y=2).result(timeout=10) == 3


def test_lambdas_closures_and_nested_functions(celery):
    offset = 10

    def nested(x):
        def inner(y):
            return x * y + offset

        return inner(3)

    assert celery.submit(lambda a: a * 2, 21).result(timeout=10) == 42
    assert celery.submit(nested, 4).result(timeout=10) == 22


def test_future_api_while_running_and_after(celery, m):
    future = celery.submit(m.sleep, 0.5)
    assert isinstance(future, Future) and isinstance(future, cf.Future)
    assert future.running() is True
    assert future.done() is False
    assert future.state == future.status  # PENDING, or STARTED already (tracked)
    assert future.state in (states.PENDING, states.STARTED)
    assert future.name == "tests.apps.basic.sleep"
    assert isinstance(future.id, str) and len(future.id) == 36
    assert future.result(timeout=10) == 0.5
    assert future.done() is True and future.running() is False
    assert future.state == states.SUCCESS
    assert future.exception() is None
    # anything else comes from Celery's AsyncResult for the same id
    assert future.ready() is True and future.successful() is True


def test_result_timeout_raises_timeout_error(celery, m):
    future = celery.submit(m.sleep, 2)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.05)
    with pytest.raises(TimeoutError):
        future.exception(timeout=0.05)
    assert future.result(timeout=10) == 2


def test_exception_is_reraised_with_type_message_and_worker_traceback(celery, m):
    future = celery.submit(m.fail, "no good")
    with pytest.raises(ValueError, match="no good") as info:
        future.result(timeout=10)
    assert future.state == states.FAILURE
    cause = info.value.__cause__
    assert cause is not None and "def fail" not in str(cause)  # a traceback, not source
    assert "tests/apps/basic.py" in str(cause) and "raise ValueError(message)" in str(cause)
    assert isinstance(future.exception(), ValueError)


def test_custom_exception_defined_in_a_closure(celery):
    def raises():
        class Custom(Exception):
            pass

        raise Custom("special")

    exc = celery.submit(raises).exception(timeout=10)
    assert type(exc).__name__ == "Custom" and str(exc) == "special"


def test_map_of_the_guide(celery, m):
    pool = celery.map(m.add, [1, 2], [3, 4], [5, 6])
    assert isinstance(pool, FuturePool) and len(pool) == 3
    assert [f.result(timeout=10) for f in pool] == [3, 7, 11]
    pool = celery.map(m.add, [1], [3], [5], y=2)
    assert [f.result(timeout=10) for f in pool] == [3, 5, 7]


def test_pool_aggregates(celery, m):
    pool = celery.map(m.sleep, [0.3], [0.3], [0.3])
    assert pool.running() is True
    assert pool.done() is False
    assert pool.result(timeout=10) == [0.3, 0.3, 0.3]
    assert pool.done() is True and pool.running() is False
    assert pool.state == states.SUCCESS
    assert pool.exception() is None
    failing = celery.map(m.fail, ["a"], ["b"])
    assert isinstance(failing.exception(timeout=10), ValueError)
    assert failing.state == states.FAILURE
    pool.add(celery.submit(m.add, 1, 1))
    assert len(pool) == 4 and pool.result(timeout=10)[-1] == 2
    assert pool[0] is pool.futures[0] and pool.id == [f.id for f in pool]


def test_pool_done_callback_fires_once_when_all_done(celery, m):
    calls = []
    done = threading.Event()
    pool = celery.map(m.add, [1, 1], [2, 2])

    def callback(p):
        calls.append(p)
        done.set()

    pool.add_done_callback(callback)
    assert done.wait(10)
    assert calls == [pool]


def test_cancel_then_cancelled(celery, m):
    future = celery.submit(m.sleep, 30)
    assert future.cancel() is True
    assert future.cancelled() is True
    assert future.done() is True
    assert future.state == states.REVOKED
    with pytest.raises(cf.CancelledError):
        future.result(timeout=1)
    # the worker really revoked it
    assert wait_for(
        lambda: (
            future.id
            in {
                i
                for ids in (celery.celery_app.control.inspect(timeout=1).revoked() or {}).values()
                for i in ids
            }
        ),
        timeout=10,
        message="revoked id on the worker",
    )


def test_cancel_a_running_task_terminates_it(celery, m):
    future = celery.submit(m.progress, 50)  # ~10 s of PROGRESS updates
    wait_for(lambda: future.state == "PROGRESS", timeout=10, message="task started")
    assert future.cancel() is True and future.cancelled()
    active = lambda: [
        t["id"]
        for ts in (celery.celery_app.control.inspect(timeout=1).active() or {}).values()
        for t in ts
    ]
    wait_for(lambda: future.id not in active(), timeout=10, message="task terminated")
    assert celery.submit(m.add, 2, 2).result(timeout=10) == 4  # the pool replaced the process


def test_cancel_after_done_is_false(celery, m):
    future = celery.submit(m.add, 1, 1)
    future.result(timeout=10)
    assert future.cancel() is False and not future.cancelled()


def test_get_by_id(celery, m):
    future = celery.submit(m.sleep, 0.3)
    again = celery.get(future.id)
    assert again is future  # the same live Future in this process
    assert future.result(timeout=10) == 0.3


def test_get_by_id_from_another_process_view(celery, m, basic_app):
    future = celery.submit(m.add, 20, 22)
    future.result(timeout=10)
    state = celery.state()
    state.futures.untrack(future.id)  # forget it locally, as another process would not have it
    other = celery.get(future.id)
    assert other is not future
    assert other.result(timeout=10) == 42


def test_get_pending_task_from_elsewhere_is_pending_not_unknown(celery, m):
    future = celery.submit(m.sleep, 1)
    celery.state().futures.untrack(future.id)
    other = wait_for(lambda: _try_get(celery, future.id), timeout=5, message="submitted marker")
    assert other.done() is False
    assert other.result(timeout=10) == 1


def _try_get(celery, task_id):
    try:
        return celery.get(task_id)
    except UnknownTaskError:
        return None


def test_unknown_id_is_distinguishable(celery):
    with pytest.raises(UnknownTaskError, match="never submitted"):
        celery.get("00000000-0000-0000-0000-000000000000")


def test_done_callbacks_with_and_without_argument_in_app_context(celery, m):
    from flask import current_app, has_app_context

    seen = []
    done = threading.Event()

    def no_arg():
        seen.append(("no_arg", has_app_context()))

    def with_future(f):
        seen.append(("with_future", f.result(), current_app.config["MARKER"]))
        done.set()

    future = celery.submit(m.add, 1, 2)
    future.add_done_callback(no_arg)
    future.add_done_callback(with_future)
    assert done.wait(10)
    wait_for(lambda: len(seen) == 2, timeout=5, message="both callbacks")
    assert seen == [("no_arg", True), ("with_future", 3, "basic-app")]
    # added after completion: runs at once, exactly once
    late = []
    future.add_done_callback(lambda f: late.append(f))
    assert late == [future]


def test_failing_callback_is_logged_not_lost(celery, m, caplog):
    done = threading.Event()

    def bad(f):
        try:
            raise RuntimeError("callback broke")
        finally:
            done.set()

    with caplog.at_level(logging.ERROR, logger="flask_execute"):
        future = celery.submit(m.add, 1, 2)
        future.add_done_callback(bad)
        assert done.wait(10)
        wait_for(lambda: "callback broke" in caplog.text, timeout=5, message="logged")
    assert future.result() == 3


def test_a_callback_may_wait_on_another_future(celery, m):
    # callbacks run off the listener thread, so this cannot deadlock
    results = []
    done = threading.Event()

    def chained(f):
        results.append(celery.submit(m.add, f.result(), 1).result(timeout=10))
        done.set()

    celery.submit(m.add, 1, 1).add_done_callback(chained)
    assert done.wait(15) and results == [3]


def test_concurrent_futures_wait_and_as_completed(celery, m):
    futures = [celery.submit(m.add, i, i) for i in range(50)]
    done, not_done = cf.wait(futures, timeout=20)
    assert not not_done and len(done) == 50
    fs = [celery.submit(m.sleep, s) for s in (0.6, 0.1)]
    order = [f.result() for f in cf.as_completed(fs, timeout=10)]
    assert sorted(order) == [0.1, 0.6]
    cancelled = celery.submit(m.sleep, 20)
    waiter = [cancelled, celery.submit(m.add, 1, 1)]
    cancelled.cancel()
    assert len(list(cf.as_completed(waiter, timeout=10))) == 2


def test_asyncio_wrap_future(celery, m):
    async def main():
        return await asyncio.wrap_future(celery.submit(m.add, 5, 5))

    assert asyncio.run(main()) == 10


def test_current_task_inside_and_outside(celery, m):
    assert not current_task
    with pytest.raises(RuntimeError, match="only available while a task runs"):
        current_task.update_state(state="PROGRESS")

    def guarded(x, y):
        from flask_execute import current_task

        if current_task:
            current_task.update_state(state="PROGRESS")
        return x + y, bool(current_task), current_task.id

    future = celery.submit(guarded, 1, 2)
    total, inside, task_id = future.result(timeout=10)
    assert (total, inside, task_id) == (3, True, future.id)
    assert guarded.__name__ and m.add(1, 2) == 3  # the plain function still works


def test_progress_state_and_meta_visible(celery, m):
    future = celery.submit(m.progress, 3)
    steps = []
    future.add_progress_callback(lambda f: steps.append(f.info["step"]))
    wait_for(lambda: future.state == "PROGRESS", timeout=10, message="PROGRESS state")
    assert future.info["step"] >= 1 and future.running()
    assert future.result(timeout=10) == future.id
    assert steps == [1, 2, 3]


def test_tasks_run_in_the_app_context_and_app_loads_once(celery, m):
    marker, g_value = celery.submit(m.app_name).result(timeout=10)
    assert marker == "basic-app" and g_value is None
    counts = {celery.submit(m.import_count).result(timeout=10) for _ in range(6)}
    assert counts == {"1"}  # imported once in the worker, inherited by every pool process


def test_queue_option_is_reserved(celery, m):
    import redis

    future = celery.submit(m.add, 1, 2, queue="nobody-listens", countdown=0)
    client = redis.Redis.from_url(celery.celery_app.conf.broker_url)
    wait_for(lambda: client.llen("nobody-listens") == 1, timeout=5, message="queued")
    assert future.running()
    future.cancel()
    client.delete("nobody-listens")


def test_apply_reserves_no_keywords(celery):
    def echo(queue, priority):
        return queue, priority

    assert tuple(celery.apply(echo, (), {"queue": "q", "priority": 3}).result(timeout=10)) == (
        "q",
        3,
    )


def test_forged_message_is_rejected_by_the_worker(celery, tmp_path):
    from flask_execute import SignatureError
    from flask_execute.plugins.serializer import CloudpickleSerializer
    from flask_execute.signing import Signer
    from flask_execute.wire import Wire
    from tests.test_wire import Tripwire

    trip = tmp_path / "worker-unpickled"
    forged = Wire(CloudpickleSerializer(), Signer([b"attacker"])).pack_call(
        print, (Tripwire(str(trip)),), {}, task_id="forged"
    )
    state = celery.state()
    celery.submit(print).result(timeout=10)  # a genuine one passes
    from flask_execute.runtime import Message

    bad = state.send([Message(state.run_task, (forged,), {}, {}, "forged")])[0]
    with pytest.raises(SignatureError):
        bad.result(timeout=10)
    assert not trip.exists()


def test_forged_result_in_redis_is_rejected(celery, m, tmp_path):
    import json

    import cloudpickle
    import redis

    trip = tmp_path / "client-unpickled"
    future = celery.submit(m.sleep, 3)
    payload = {
        "flask_execute": __import__("base64")
        .urlsafe_b64encode(
            b"\0" * 32
            + cloudpickle.dumps(
                __import__("tests.test_wire", fromlist=["Tripwire"]).Tripwire(str(trip))
            )
        )
        .decode()
    }
    meta = {
        "status": "SUCCESS",
        "result": payload,
        "traceback": None,
        "children": [],
        "task_id": future.id,
    }
    client = redis.Redis.from_url(celery.celery_app.conf.broker_url)
    key = f"celery-task-meta-{future.id}"
    client.set(key, json.dumps(meta))
    client.publish(key, json.dumps(meta))
    from flask_execute import SignatureError

    with pytest.raises(SignatureError):
        future.result(timeout=10)
    assert not trip.exists()


def test_done_callbacks_have_finished_when_result_returns(celery, m):
    # The original gave this: a callback's side effect (a database row, say) is there
    # as soon as result() returns, however long the callback takes.
    rows: list[str] = []

    def slow_insert(f):
        threading.Event().wait(0.3)  # a slow callback: the point of the test
        rows.append(f"row {f.result()}")

    future = celery.submit(m.add, 1, 2)
    future.add_done_callback(slow_insert)
    future.add_done_callback(lambda: rows.append("second"))
    assert future.result(timeout=10) == 3
    assert rows == ["row 3", "second"]

    failing = celery.submit(m.fail, "boom")
    failing.add_done_callback(lambda f: rows.append(type(f.exception())))
    assert isinstance(failing.exception(timeout=10), ValueError)
    assert rows[-1] is ValueError


def test_a_callback_may_wait_on_its_own_future(celery, m):
    seen = []
    future = celery.submit(m.add, 2, 2)
    future.add_done_callback(lambda f: seen.append(f.result(timeout=5)))
    assert future.result(timeout=10) == 4
    assert seen == [4]


def test_pool_exception_waits_for_every_task(celery, m):
    pool = celery.map(m.fail, ["first"])
    pool.add(celery.submit(m.sleep, 0.5))
    exc = pool.exception(timeout=10)
    assert isinstance(exc, ValueError) and str(exc) == "first"
    assert pool.done(), "exception() returned while a task was still running"
    assert celery.map(m.add, [1, 1]).exception(timeout=10) is None


def test_a_stored_result_is_never_reported_as_a_timeout(celery, m, basic_app):
    # The result is stored without the pub/sub message that normally announces it (a
    # message missed during a reconnect): result(timeout) reads the key before it
    # gives up.
    future = celery.submit(m.add, 1, 2, queue="nobody-serves-this")
    backend = celery.celery_app.backend
    meta = {"status": states.SUCCESS, "result": 42, "task_id": future.id, "name": None}
    key = backend.get_key_for_task(future.id)
    backend.client.set(key, backend.encode(meta))
    try:
        assert future.result(timeout=0.3) == 42
        assert future.state == states.SUCCESS
    finally:
        backend.client.delete(key, "nobody-serves-this")
    stalled = celery.submit(m.add, 1, 2, queue="nobody-serves-this")
    try:
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.2"):
            stalled.result(timeout=0.2)
    finally:
        stalled.cancel()
        backend.client.delete("nobody-serves-this")
