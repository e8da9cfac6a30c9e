"""``await future``, ``await pool`` and ``as_completed``, against a real worker and eager."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import threading
import time

import pytest
from celery import states
from flask import Flask

from flask_execute import Celery, FuturePool, as_completed

pytestmark = pytest.mark.timeout(60)


def slow_failure(message, seconds):
    time.sleep(seconds)
    raise ValueError(message)


def test_await_future_and_pool(celery, m):
    async def main():
        return await celery.submit(m.add, 1, 2), await celery.map(m.add, [1, 2], [3, 4])

    assert asyncio.run(main()) == (3, [3, 7])


def test_await_a_failed_task_reraises_its_exception_with_the_worker_traceback(celery, m):
    async def main():
        await celery.submit(m.fail, "no good")

    with pytest.raises(ValueError, match="no good") as info:
        asyncio.run(main())
    cause = str(info.value.__cause__)
    assert "tests/apps/basic.py" in cause and "raise ValueError(message)" in cause


def test_await_pool_raises_the_first_failure_in_submission_order(celery, m):
    # The second call fails first in time; the first one's exception is the one raised.
    pool = FuturePool([celery.submit(slow_failure, "first", 0.5), celery.submit(m.fail, "second")])

    async def main():
        await pool

    with pytest.raises(ValueError, match="first"):
        asyncio.run(main())
    assert isinstance(pool[1].exception(timeout=10), ValueError)


def test_await_returns_once_done_callbacks_have_finished(celery, m):
    rows = []

    def slow_insert(f):
        threading.Event().wait(0.3)  # a slow callback: the point of the test
        rows.append(f"row {f.result()}")

    future = celery.submit(m.add, 1, 2)
    future.add_done_callback(slow_insert)

    async def main():
        value = await future
        return value, list(rows)

    assert asyncio.run(main()) == (3, ["row 3"])


def test_a_revoked_task_raises_the_futures_cancelled_error(celery, m):
    future = celery.submit(m.sleep, 30)

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_soon(future.cancel)  # while the coroutine below awaits it
        try:
            await future
        except cf.CancelledError as exc:
            return exc
        return None

    exc = asyncio.run(main())
    # the outcome of the task, not a cancellation of the coroutine that awaited it
    assert isinstance(exc, cf.CancelledError) and not isinstance(exc, asyncio.CancelledError)
    assert future.cancelled() and future.state == states.REVOKED


def test_cancelling_the_await_leaves_the_task_running(celery, m):
    future = celery.submit(m.sleep, 1.0)

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(future, timeout=0.05)
        return future.cancelled()

    assert asyncio.run(main()) is False
    assert future.result(timeout=10) == 1.0  # a revoked task would raise CancelledError
    assert future.state == states.SUCCESS
    assert not future._hooks  # the abandoned wait left no hook behind


def test_awaiting_many_futures_starts_no_thread(celery, m):
    celery.submit(m.add, 0, 0).result(timeout=10)  # the listener runs already
    futures = [celery.submit(m.sleep, 0.2) for _ in range(10)]
    before = threading.active_count()

    async def main():
        waits = [asyncio.ensure_future(_awaited(f)) for f in futures]
        listing = asyncio.ensure_future(_listed(futures))
        await asyncio.sleep(0)  # every wait has started
        during = threading.active_count(), sum(not f.done() for f in futures)
        return during, await asyncio.gather(*waits), await listing

    (during, pending), values, listed = asyncio.run(main())
    assert pending > 0, "every future was done before the waits began: nothing measured"
    assert during == before
    assert values == [0.2] * 10 and len(listed) == 10
    assert threading.active_count() == before


async def _awaited(future):
    return await future


async def _listed(futures):
    return [f async for f in as_completed(futures, timeout=10)]


def test_as_completed_yields_each_future_once_as_it_finishes(celery, m):
    def futures():
        slow = celery.submit(m.sleep, 1.5)
        fast = celery.submit(m.add, 1, 2)
        pool = celery.map(m.add, [1, 1], [2, 2])
        return slow, [slow, fast, pool, fast]

    slow, given = futures()
    seen = list(as_completed(given, timeout=20))
    assert len(seen) == 4 and len(set(seen)) == 4
    assert seen[-1] is slow and all(f.done() for f in seen)

    slow, given = futures()

    async def main():
        return [(f, await f) async for f in as_completed(given, timeout=20)]

    seen_async = asyncio.run(main())
    assert sorted(value for _, value in seen_async) == [1.5, 2, 3, 4]
    assert seen_async[-1] == (slow, 1.5) and len({f for f, _ in seen_async}) == 4


def test_as_completed_yields_only_after_the_done_callbacks(celery, m):
    rows = []
    future = celery.submit(m.add, 2, 2)
    future.add_done_callback(lambda: (threading.Event().wait(0.3), rows.append("done")))
    for f in as_completed([future], timeout=10):
        assert f is future and rows == ["done"]


def test_as_completed_inside_a_done_callback_does_not_wait_for_its_own_thread(celery, m):
    # A done callback runs on the app's callback thread, where the other futures' done
    # callbacks queue behind it: as_completed there must not wait for them.
    seen = []
    later = celery.submit(m.sleep, 0.3)
    later.add_done_callback(lambda: seen.append("later's callback"))

    def drain(_future):
        seen.extend(f.result() for f in as_completed([later], timeout=5))

    first = celery.submit(m.add, 1, 1)
    first.add_done_callback(drain)
    assert first.result(timeout=10) == 2 and seen[0] == 0.3
    assert later.result(timeout=10) == 0.3 and seen == [0.3, "later's callback"]


def test_async_for_as_completed_times_out_naming_what_is_left(celery, m):
    quick = celery.submit(m.add, 1, 1)
    stuck = celery.submit(m.sleep, 30)
    seen = []

    async def main():
        async for future in as_completed([quick, stuck], timeout=0.5):
            seen.append(future)

    try:
        with pytest.raises(TimeoutError, match=r"1 \(of 2\) futures unfinished") as info:
            asyncio.run(main())
        assert isinstance(info.value, cf.TimeoutError)
        assert seen == [quick] and not stuck.done()
        with pytest.raises(TimeoutError, match=r"1 \(of 2\)"):
            list(as_completed([quick, stuck], timeout=0.1))
    finally:
        stuck.cancel()


def test_await_in_an_async_flask_view(celery, m):
    view_app = Flask("async-view")

    @view_app.get("/sum")
    async def total():
        future = celery.submit(m.add, 2, 3)
        return {"one": await future, "pool": await celery.map(m.add, [1, 2], [3, 4])}

    response = view_app.test_client().get("/sum")
    assert response.status_code == 200
    assert response.get_json() == {"one": 5, "pool": [3, 7]}


def test_a_loop_closed_while_awaiting_does_not_break_the_listener(celery, m, caplog):
    future = celery.submit(m.sleep, 0.3)
    loop = asyncio.new_event_loop()
    task = loop.create_task(_awaited(future))  # kept: its wait stays registered
    loop.run_until_complete(asyncio.sleep(0))
    assert len(future._hooks) == 1
    loop.close()
    with caplog.at_level(logging.ERROR, logger="flask_execute"):
        assert future.result(timeout=10) == 0.3
        assert future._hooks is None  # the wake-up ran, against the closed loop
        assert celery.submit(m.add, 1, 1).result(timeout=10) == 2
    assert not [r for r in caplog.records if r.name.startswith("flask_execute")]
    assert not task.done()


# -- eager mode ----------------------------------------------------------------------


@pytest.fixture
def eager():
    app = Flask("eager-async")
    app.config.update(
        CELERY_ALWAYS_EAGER=True,
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",  # nothing listens: eager must not care
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    )
    return app, Celery(app)


def add(x, y):
    return x + y


def test_eager_await_and_as_completed(eager):
    app, celery = eager

    def fail():
        raise KeyError("gone")

    async def main():
        future = celery.submit(add, 1, 2)
        pool = celery.map(add, [1, 2], [3, 4])
        with pytest.raises(KeyError, match="gone") as info:
            await celery.submit(fail)
        assert "in fail" in str(info.value.__cause__)
        # all done already: yielded even with no time left
        listed = [f async for f in as_completed([future, pool, future], timeout=0)]
        return await future, await pool, len(listed)

    assert asyncio.run(main()) == (3, [3, 7], 3)
    assert [f.result() for f in as_completed(celery.submit(add, 2, 2), timeout=0)] == [4]
    with pytest.raises(TypeError, match="Futures and FuturePools"):
        as_completed([cf.Future()])


def test_eager_async_flask_view(eager):
    app, celery = eager

    @app.get("/sum")
    async def total():
        return {"sum": await celery.submit(add, 20, 22)}

    assert app.test_client().get("/sum").get_json() == {"sum": 42}
