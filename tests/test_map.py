"""Batched ``map``: chunks of calls per message, a Future per call, against a real
worker and Redis."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
import uuid

import pytest
import redis
from celery import states

from flask_execute import Future, FuturePool
from flask_execute.chunk_ids import split_call_id
from flask_execute.errors import RemoteTraceback
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def ran(broker_url):
    """A Redis set the calls of one test add their argument to, and a reader of it."""
    key = f"test-map-ran:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(broker_url)
    yield key, lambda: {int(v) for v in client.smembers(key)}
    client.delete(key)


def _recorder(broker_url, key, seconds=0.0):
    def record(x):

        import redis

        redis.Redis.from_url(broker_url).sadd(key, x)
        time.sleep(seconds)
        return x

    return record


def _chunks(pool):
    return [split_call_id(f.id)[0] for f in pool]


def test_many_calls_travel_in_few_messages_with_a_future_each(celery, m):
    pool = celery.map(m.add, *[(i, i) for i in range(2000)])
    assert isinstance(pool, FuturePool) and len(pool) == 2000
    assert all(isinstance(f, Future) for f in pool)
    assert len(set(f.id for f in pool)) == 2000
    assert len(set(_chunks(pool))) == 63  # automatic: 2000 / 64 calls, so 32 a message
    assert pool.result(timeout=60) == [2 * i for i in range(2000)]
    assert pool.state == states.SUCCESS and all(f.state == states.SUCCESS for f in pool)
    assert celery.state().futures.pending_ids() == []


def test_one_call_that_fails_fails_alone_with_its_type_and_traceback(celery, m):
    def maybe_fail(x):
        if x == 3:
            raise KeyError(f"no {x}")
        return x

    pool = celery.options(chunksize=10).map(maybe_fail, *range(8))
    assert len(set(_chunks(pool))) == 1
    error = pool[3].exception(timeout=20)
    assert isinstance(error, KeyError) and error.args == ("no 3",)
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "maybe_fail" in str(error.__cause__) and "KeyError" in str(error.__cause__)
    assert [f.result(timeout=5) for i, f in enumerate(pool) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    assert pool[3].state == states.FAILURE and pool.state == states.FAILURE
    assert isinstance(pool.exception(), KeyError)


def test_chunksize_is_an_option_and_takes_no_name_from_the_function(celery):
    def takes_all(x, queue=None, chunksize=None, countdown=None):
        return x, queue, chunksize, countdown

    options = celery.options(chunksize=7)
    pool = options.map(takes_all, *range(20), queue="q", chunksize=3, countdown=1)
    assert [len(list(g)) for g in _groups(_chunks(pool))] == [7, 7, 6]
    assert pool.result(timeout=20)[19] == (19, "q", 3, 1)
    # submit through options: every keyword is the function's too
    assert options.submit(takes_all, 1, queue="mine").result(timeout=20) == (1, "mine", None, None)
    # the reserved keywords of map still work as options, as the guide shows
    assert celery.map(takes_all, [1], [2], chunksize=5).result(timeout=20)[1] == (2, None, 5, None)


def _groups(ids):
    from itertools import groupby

    return [list(g) for _, g in groupby(ids)]


def test_bad_options_fail_at_once_naming_what_is_accepted(celery, m):
    with pytest.raises(TypeError, match=r"unknown option 'chunk_size'.*chunksize"):
        celery.options(chunk_size=10)
    for bad in (0, -1, 2.5, "10", True):
        with pytest.raises(ValueError, match="chunksize must be a whole number"):
            celery.options(chunksize=bad)
    with pytest.raises(TypeError, match="map\\(\\) needs a callable"):
        celery.map(42, [1])


def test_progress_inside_a_call_reaches_that_calls_future(celery, m):
    pool = celery.options(chunksize=3).map(m.progress, 1, 3, 1)
    steps = []
    pool[1].add_progress_callback(lambda f: steps.append(f.info["step"]))
    assert pool.result(timeout=30) == [f.id for f in pool]  # current_task.id is the call's
    assert steps == [1, 2, 3]
    assert pool[0].info == pool[0].result() and pool[2].state == states.SUCCESS


def test_a_call_cancelled_before_its_chunk_starts_is_skipped(celery, m, ran, broker_url):
    key, read = ran
    record = _recorder(broker_url, key)
    # hold both worker processes, so the map's chunk waits in the queue
    hold = _recorder(broker_url, key, seconds=1.5)
    holders = [celery.submit(hold, 100 + i) for i in range(2)]
    wait_for(lambda: read() == {100, 101}, timeout=10, message="both processes held")
    pool = celery.options(chunksize=5).map(record, *range(5))
    assert pool[2].cancel() is True and pool[4].cancel() is True
    assert pool[2].cancelled() and pool[2].state == states.REVOKED
    assert [pool[i].result(timeout=30) for i in (0, 1, 3)] == [0, 1, 3]
    with pytest.raises(cf.CancelledError):
        pool[2].result()
    assert read() == {0, 1, 3, 100, 101}  # the worker skipped the cancelled calls
    assert pool.cancelled() is True and [h.result() for h in holders] == [100, 101]


def test_a_call_cancelled_while_its_chunk_runs_is_skipped_when_reached(celery, ran, broker_url):
    key, read = ran
    record = _recorder(broker_url, key, seconds=0.8)
    pool = celery.options(chunksize=4).map(record, *range(4))
    wait_for(lambda: 0 in read(), timeout=20, message="the chunk started")
    assert pool[3].cancel() is True
    assert [pool[i].result(timeout=30) for i in (0, 1, 2)] == [0, 1, 2]
    assert pool[3].cancelled() and read() == {0, 1, 2}


def test_cancelling_every_call_revokes_the_chunk(celery, m, ran, broker_url, gate):
    key, read = ran
    release, held = gate
    record = _recorder(broker_url, key)
    # Both worker processes busy until released: the chunk stays queued.
    holders = [celery.submit(m.report_until_released, held, 1) for _ in range(2)]
    wait_for(lambda: all(h.progress is not None for h in holders), 30)
    pool = celery.options(chunksize=3).map(record, *range(3))
    assert pool.cancel() is True
    assert all(f.cancelled() for f in pool)
    release()
    release()
    assert [h.result(timeout=20) for h in holders] == ["released", "released"]
    follow = celery.submit(m.add, 1, 1)  # queued behind the revoked chunk
    assert follow.result(timeout=20) == 2
    assert read() == set()


def test_a_long_chunk_reports_its_calls_as_they_finish(celery, m):
    pool = celery.options(chunksize=3).map(m.sleep, 0.7, 0.7, 0.7)
    first = next(cf.as_completed(pool, timeout=30))
    assert first is pool[0] and first.result() == 0.7
    assert not pool[2].done()  # a partial report, not the end of the chunk
    results = pool.results(timeout=30)
    assert next(results) == 0.7
    assert list(results) == [0.7, 0.7]


def test_results_come_in_order_before_the_pool_is_done(celery, m):
    # one chunk, so one process runs both calls in turn: the first is reported while
    # the second still runs
    pool = celery.options(chunksize=2).map(m.sleep, 0.6, 1.5)
    results = pool.results(timeout=30)
    assert next(results) == 0.6
    assert not pool.done()
    assert next(results) == 1.5
    assert pool.done()


def test_as_completed_over_ten_thousand_calls_adds_no_thread_per_future(celery, m):
    before = threading.active_count()
    pool = celery.map(m.add, *[(i, 1) for i in range(10_000)])
    seen = [f.result() for f in cf.as_completed(pool, timeout=60)]
    assert sorted(seen) == list(range(1, 10_001))
    assert threading.active_count() <= before + 2  # the listener and callbacks, once


def test_a_map_of_one_call_is_one_message(celery, m):
    # its cost against a submit is measured in bench/bulk.py (c), never asserted here
    pool = celery.map(m.add, [20, 22])
    assert len(pool) == 1 and split_call_id(pool[0].id)[1] == 0
    assert pool.result(timeout=10) == [42]


def test_starmap_reads_a_generator_once(celery, m):
    consumed = []

    def calls():
        for i in range(1200):
            consumed.append(i)
            yield i, i

    pool = celery.starmap(m.add, calls())
    assert len(consumed) == 1200 and len(pool) == 1200
    sizes = [len(g) for g in _groups(_chunks(pool))]
    assert sizes[:4] == [1, 2, 4, 8] and max(sizes) <= 500 and sum(sizes) == 1200
    assert pool.result(timeout=60) == [2 * i for i in range(1200)]


def test_get_a_call_by_its_id_after_its_futures_are_gone(celery, m):
    pool = celery.options(chunksize=3).map(m.add, (1, 1), (2, 2), (3, 3))
    ids = pool.id
    assert pool.result(timeout=20) == [2, 4, 6]
    assert celery.get(ids[1]).result(timeout=10) == 4
    running = celery.options(chunksize=2).map(m.sleep, 0.2, 0.3)
    again = celery.get(running[1].id)
    assert again is running[1]
    assert again.result(timeout=10) == 0.3


def test_a_call_cannot_retry_itself_but_fails_alone(celery):
    def retrying(x):
        from flask_execute import current_task

        if x == 1:
            current_task.retry(countdown=1)
        return x

    pool = celery.options(chunksize=3).map(retrying, 0, 1, 2)
    error = pool[1].exception(timeout=20)
    assert isinstance(error, RuntimeError) and "celery.submit()" in str(error)
    assert [pool[0].result(), pool[2].result()] == [0, 2]


def test_an_unpicklable_result_fails_only_its_call(celery):
    import threading as threads

    def make(kind):
        return threads.Lock() if kind == "lock" else kind

    pool = celery.options(chunksize=2).map(make, "a", "lock")
    assert pool[0].result(timeout=20) == "a"
    with pytest.raises(Exception, match="cannot pickle"):
        pool[1].result(timeout=20)


def test_every_chunk_of_a_map_goes_to_the_broker_in_one_round_trip(tmp_path, broker_url):
    from tests.apps import faults_app
    from tests.helpers import private_redis, warm_broker_reads

    with private_redis(tmp_path / "redis") as server:
        # results on the run's Redis: the private one sees the broker's traffic only
        _, celery = faults_app.create_app(server.url(), CELERY_RESULT_BACKEND=broker_url)
        try:
            reads = warm_broker_reads(celery, server, faults_app.add)
            client = server.client()

            before = reads()
            pool = celery.options(chunksize=1).map(faults_app.add, *[(i, i) for i in range(40)])
            during = reads() - before - 1  # the INFO call itself
            assert client.llen("faults") == 3 + 40 and len(pool) == 40
            assert during <= 5, f"{during} reads for 40 messages"
            before = reads()
            for i in range(5):
                celery.submit(faults_app.add, i, i)
            assert reads() - before - 1 >= 5  # single submits: one round trip each
        finally:
            celery.stop()


def test_celery_inspect_sees_a_running_chunk_as_one_task_named_after_the_function(celery, m):
    pool = celery.options(chunksize=3).map(m.sleep, 0.5, 0.5, 0.5)
    chunk_id = split_call_id(pool[0].id)[0]

    def running():
        replies = celery.inspect.active(timeout=1) or {}
        return [t for tasks in replies.values() for t in tasks if t["id"] == chunk_id]

    (task,) = wait_for(running, timeout=20, message="the chunk among active tasks")
    # its argsrepr, not the signed chunk (tests/test_shown.py)
    assert task["name"] == "tests.apps.basic.sleep"
    assert task["args"] == "<3 calls> sleep(0.5), sleep(0.5), …"
    assert pool.result(timeout=20) == [0.5, 0.5, 0.5]


def test_cancelling_a_call_found_elsewhere_leaves_the_rest_of_its_chunk(celery, m, gate):
    import tests.apps.status_app as sa

    release, key = gate
    pool = celery.options(chunksize=2).map(m.report_until_released, [key, 1], [key, 1])
    wait_for(lambda: pool[0].progress is not None, 30)  # call 0 runs, 1 waits
    elsewhere = sa.celery.get(pool[1].id)  # knows only call 1 of the chunk
    assert elsewhere.cancel()
    release()
    # The chunk was not revoked: call 0 still ends well; call 1 was skipped.
    assert pool[0].result(timeout=30) == "released"
    with pytest.raises(cf.CancelledError):
        pool[1].result(timeout=30)
