"""``celery.executor()``: the standard :class:`concurrent.futures.Executor` API on a real
worker and Redis, checked against a ThreadPoolExecutor running the same code."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import operator
import threading
from pathlib import Path

import pytest

from flask_execute import Future
from flask_execute.chunk_ids import split_call_id
from flask_execute.executor import CeleryExecutor
from tests import helpers
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)


def stdlib_client(executor: cf.Executor) -> dict[str, object]:
    """Code that knows only the standard Executor API."""
    with executor as ex:
        single = ex.submit(pow, 2, 10)
        keyed = ex.submit(sorted, [3, 1, 2], reverse=True)
        many = [ex.submit(divmod, 17, n) for n in range(1, 6)]
        done, not_done = cf.wait(many, timeout=30)
        first = next(cf.as_completed([single], timeout=30)).result()
        mapped = list(ex.map(operator.add, [1, 2, 3], [10, 20, 30, 40], timeout=30))
        chunked = list(ex.map(pow, range(10), [2] * 10, chunksize=4))
        failed = ex.submit(int, "not a number").exception(timeout=30)
        callbacks: list[object] = []
        last = ex.submit(operator.mul, 6, 7)
        last.add_done_callback(lambda f: callbacks.append(f.result()))
    # Leaving the block waited for every call: the last one is done, its callback ran.
    after_shutdown = "accepted"
    try:
        ex.submit(pow, 1, 1)
    except RuntimeError:
        after_shutdown = "RuntimeError"
    return {
        "single": single.result(),
        "keyed": keyed.result(),
        "many": [f.result() for f in many],
        "waited": (len(done), len(not_done)),
        "first": first,
        "mapped": mapped,
        "chunked": chunked,
        "failed": (type(failed).__name__, str(failed)),
        "last": (last.done(), last.result(timeout=0), callbacks),
        "after_shutdown": after_shutdown,
    }


def test_code_written_for_the_stdlib_executor_runs_unchanged_with_the_same_results(celery):
    with cf.ThreadPoolExecutor(max_workers=2) as threads:
        expected = stdlib_client(threads)
    assert stdlib_client(celery.executor()) == expected
    assert expected["mapped"] == [11, 22, 33]  # zipped, as the stdlib does


def test_submit_returns_our_future_and_every_keyword_goes_to_the_function(celery):
    def tag(x, *, queue=None, countdown=None, priority=None):
        return [x, queue, countdown, priority]

    executor = celery.executor(queue="basic")
    assert isinstance(executor, cf.Executor) and isinstance(executor, CeleryExecutor)
    future = executor.submit(tag, 1, queue="mine", countdown=7, priority=300)
    assert isinstance(future, Future)
    assert future.result(timeout=30) == [1, "mine", 7, 300]
    assert repr(executor) == "<celery.executor(queue='basic')>"
    executor.shutdown()
    assert repr(executor) == "<celery.executor(queue='basic') shut down>"


def test_bad_options_fail_when_the_executor_is_made_or_map_is_called(celery, m):
    with pytest.raises(TypeError, match="unknown option 'nope'"):
        celery.executor(nope=1)
    with pytest.raises(ValueError, match="retries must be a whole number"):
        celery.executor(retries=-1, retry_on=OSError)
    with pytest.raises(ValueError, match="chunksize must be a whole number"):
        celery.executor().map(m.add, [1], [2], chunksize=0)
    # The executor's options reach map: a time limit holds per message.
    with pytest.raises(ValueError, match="cannot go with a time limit"):
        celery.executor(time_limit=5).map(m.add, [1], [2], chunksize=2)


def test_map_keeps_order_and_sends_chunksize_calls_per_message(celery, m):
    def whoami(x):
        from flask_execute import current_task

        return x, current_task.id

    with celery.executor() as executor:
        assert list(executor.map(m.sleep, [0.6, 0.0, 0.3])) == [0.6, 0.0, 0.3]
        found = list(executor.map(whoami, range(10), chunksize=4))
        assert [x for x, _ in found] == list(range(10))
        assert len({split_call_id(task_id)[0] for _, task_id in found}) == 3  # 4 + 4 + 2
        found = list(executor.map(whoami, range(3)))  # the stdlib's default: 1
        assert len({split_call_id(task_id)[0] for _, task_id in found}) == 3
    with celery.executor(chunksize=5) as executor:  # the executor's option as default
        found = list(executor.map(whoami, range(10)))
        assert len({split_call_id(task_id)[0] for _, task_id in found}) == 2


def test_map_timeout_counts_from_the_call_and_cancels_what_was_not_read(celery, m, gate):
    release, key = gate
    with celery.executor() as executor:
        results = executor.map(m.report_until_released, [key, key], [0, 0], timeout=0.5)
        with pytest.raises(TimeoutError):
            next(results)
        # The iteration ended: both calls were cancelled, nothing waits any more.
        wait_for(lambda: celery.state().futures.pending_ids() == [], message="no pending")


def test_shutdown_waits_for_every_call_and_refuses_new_ones(celery, m, gate):
    release, key = gate
    executor = celery.executor()
    running = executor.submit(m.report_until_released, key, 0)
    stopper = threading.Thread(target=executor.shutdown)
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive() and not running.done()  # still waiting for the call
    with pytest.raises(RuntimeError, match="cannot submit after shutdown"):
        executor.submit(m.add, 1, 2)
    with pytest.raises(RuntimeError, match="cannot map after shutdown"):
        executor.map(m.add, [1], [2])
    release()
    stopper.join(30)
    assert not stopper.is_alive() and running.result(timeout=0) == "released"
    executor.shutdown()  # a second shutdown is harmless


def test_shutdown_cancel_futures_cancels_the_calls_that_have_not_started(celery, m, gate):
    release, key = gate
    executor = celery.executor()
    # Both worker processes busy with calls that reported progress: started.
    running = [executor.submit(m.report_until_released, key, 1) for _ in range(2)]
    wait_for(lambda: all(f.state == "PROGRESS" for f in running), timeout=30, message="started")
    queued = [executor.submit(m.add, i, i) for i in range(4)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert not any(f.done() for f in running)
    release()
    release()
    assert [f.result(timeout=30) for f in running] == ["released", "released"]


@pytest.fixture(scope="module")
def tracked(broker_url, tmp_path_factory, session_pids):
    """``tests.apps.executor_app`` (``CELERY_TASK_TRACK_STARTED``), one worker process."""
    import tests.apps.executor_app as module

    log = Path(tmp_path_factory.mktemp("executor")) / "worker.log"
    with helpers.session_worker(
        "tests.apps.executor_app:app",
        module.celery.celery_app,
        broker_url,
        log,
        session_pids,
        name="executor",
        queues="executor",
        concurrency=1,
    ):
        yield module


def test_with_started_tracked_cancel_futures_spares_a_silent_running_call(tracked, gate):
    release, key = gate
    executor = tracked.celery.executor()
    running = executor.submit(tracked.wait_for_release, key)
    wait_for(lambda: running.state == "STARTED", timeout=30, message="started")
    queued = [executor.submit(tracked.add, i, i) for i in range(3)]
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued) and not running.done()
    release()
    executor.shutdown()  # waits for the running call
    assert running.result(timeout=0) == "released"


def test_run_in_executor(celery, m):
    async def main():
        loop = asyncio.get_running_loop()
        with celery.executor() as executor:
            one = await loop.run_in_executor(executor, m.add, 2, 3)
            many = await asyncio.gather(
                *(loop.run_in_executor(executor, m.add, i, i) for i in range(5))
            )
            with pytest.raises(ValueError, match="no good"):
                await loop.run_in_executor(executor, m.fail, "no good")
        return one, many

    assert asyncio.run(main()) == (5, [0, 2, 4, 6, 8])
