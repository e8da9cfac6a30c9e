"""Retries of submitted calls (``celery.options(retries=..., retry_on=...)``) against a
real worker and Redis, and in eager mode.

The functions are closures, sent by value: each counts its tries in a Redis list of
the run's database (the time of each try), which the test reads.
"""

from __future__ import annotations

import uuid

import pytest
import redis
from celery import states
from flask import Flask

from flask_execute import Celery
from flask_execute.errors import RemoteTraceback
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def tries(broker_url):
    """``(key, read)``: a Redis list the calls of one test push the time of each try
    to, and the times pushed so far."""
    client = redis.Redis.from_url(broker_url)
    key = f"tries-{uuid.uuid4().hex}"
    yield key, lambda suffix="": [float(t) for t in client.lrange(key + suffix, 0, -1)]
    for found in client.scan_iter(f"{key}*"):
        client.delete(found)
    client.close()


def flaky(url, key, fail_times, error=ConnectionError, wait_key=None):
    """A function that fails ``fail_times`` times with ``error``, then returns the
    number of its try (waiting first for ``wait_key`` to be pushed, when given)."""

    def call(suffix=""):
        import time

        import redis

        client = redis.Redis.from_url(url)
        n = client.rpush(key + suffix, time.time())
        if n <= fail_times:
            raise error(f"try {n}")
        if wait_key:
            client.blpop([wait_key], 60)
        return n

    return call


def test_a_call_is_retried_until_it_succeeds(celery, broker_url, tries):
    key, read = tries
    fn = flaky(broker_url, key, fail_times=2)
    future = celery.options(retries=3, retry_on=(ConnectionError,), retry_backoff=0.05).submit(fn)
    assert future.result(timeout=30) == 3
    assert len(read()) == 3 and future.state == states.SUCCESS
    assert future.name.endswith("flaky.<locals>.call")  # the function's name, not a wrapper


def test_an_exception_not_in_retry_on_fails_at_once(celery, broker_url, tries):
    key, read = tries
    fn = flaky(broker_url, key, fail_times=5, error=KeyError)
    future = celery.options(retries=3, retry_on=ConnectionError, retry_backoff=0.05).submit(fn)
    error = future.exception(timeout=30)
    assert type(error) is KeyError and "try 1" in str(error)
    assert len(read()) == 1


def test_retries_exhausted_fail_with_the_last_exception_and_its_traceback(
    celery, broker_url, tries
):
    key, read = tries
    fn = flaky(broker_url, key, fail_times=10)
    future = celery.options(retries=2, retry_on=OSError, retry_backoff=0.05).submit(fn)
    error = future.exception(timeout=30)
    assert type(error) is ConnectionError and str(error) == "try 3"
    assert isinstance(error.__cause__, RemoteTraceback) and "in call" in str(error.__cause__)
    assert len(read()) == 3 and future.state == states.FAILURE
    with pytest.raises(ConnectionError, match="try 3"):
        future.result(timeout=1)


def test_the_future_shows_retry_with_the_exception_during_the_backoff(celery, broker_url, tries):
    key, read = tries
    fn = flaky(broker_url, key, fail_times=1)
    options = celery.options(retries=1, retry_on=ConnectionError, retry_backoff=2)
    future = options.options(retry_jitter=False).submit(fn)
    wait_for(lambda: future.state == states.RETRY, timeout=20, message="state RETRY")
    assert type(future.info) is ConnectionError and str(future.info) == "try 1"
    assert not future.done()
    assert future.result(timeout=30) == 2
    first, second = read()
    assert second - first >= 1.9  # the backoff without jitter: 2 s, a lower bound only


def test_the_backoff_doubles_from_one_retry_to_the_next(celery, broker_url, tries):
    key, read = tries
    fn = flaky(broker_url, key, fail_times=2)
    options = celery.options(retries=2, retry_on=ConnectionError, retry_backoff=0.5)
    assert options.options(retry_jitter=False).submit(fn).result(timeout=30) == 3
    times = read()
    assert times[1] - times[0] >= 0.45 and times[2] - times[1] >= 0.95


def test_retry_backoff_max_caps_the_wait(celery, broker_url, tries):
    key, read = tries
    fn = flaky(broker_url, key, fail_times=1)
    options = celery.options(retries=1, retry_on=ConnectionError, retry_backoff=600)
    future = options.options(retry_backoff_max=0.2, retry_jitter=False).submit(fn)
    assert future.result(timeout=30) == 2  # not ten minutes later (the mark's bound)


def test_map_retries_each_call_in_its_chunk(celery, broker_url, tries):
    key, read = tries
    fn = flaky(broker_url, key, fail_times=1)
    options = celery.options(retries=2, retry_on=ConnectionError, retry_backoff=0.05)
    pool = options.map(fn, ["a"], ["b"], ["c"], ["d"])
    assert pool.result(timeout=30) == [2, 2, 2, 2]
    assert [len(read(s)) for s in "abcd"] == [2, 2, 2, 2]


def test_map_a_call_failing_for_good_fails_alone(celery, broker_url, tries):
    key, read = tries
    bad = flaky(broker_url, key, fail_times=5, error=KeyError)
    good = flaky(broker_url, key, fail_times=1)

    def fn(suffix):  # "a" raises what is not retried; "b" fails once, then passes
        return bad(suffix) if suffix == "a" else good(suffix)

    options = celery.options(retries=2, retry_on=ConnectionError, retry_backoff=0.05)
    pool = options.options(chunksize=2).map(fn, ["a"], ["b"])
    assert type(pool[0].exception(timeout=30)) is KeyError
    assert pool[1].result(timeout=30) == 2
    assert [len(read(s)) for s in "ab"] == [1, 2]


def test_map_a_call_waiting_to_retry_shows_retry_and_the_calls_before_it_are_done(
    celery, broker_url, tries, gate
):
    key, read = tries
    release, wait_key = gate
    first_try_fails = flaky(broker_url, key, fail_times=1, wait_key=wait_key)

    def fn(suffix):  # "a" succeeds at once; "b" fails once, then waits for the gate
        if suffix == "a":
            return "a"
        return first_try_fails(suffix)

    options = celery.options(retries=1, retry_on=ConnectionError, retry_backoff=0.05)
    pool = options.options(chunksize=2).map(fn, ["a"], ["b"])
    wait_for(lambda: pool[1].state == states.RETRY, timeout=20, message="call b in RETRY")
    assert type(pool[1].info) is ConnectionError and str(pool[1].info) == "try 1"
    assert pool[0].result(timeout=20) == "a"  # reported before b waited
    assert not pool[1].done()
    release()
    assert pool[1].result(timeout=30) == 2


def test_retries_refuse_a_generator_function(celery):
    def gen():
        yield 1

    with pytest.raises(TypeError, match=r"retries cannot apply to .*gen, a generator"):
        celery.options(retries=1, retry_on=OSError).submit(gen)


# -- eager mode --------------------------------------------------------------------------

EAGER_TRIES: list[int] = []


def eager_flaky(fail_times: int) -> int:
    """Runs in this process (eager): sent by reference, so the list is this module's."""
    EAGER_TRIES.append(1)
    if len(EAGER_TRIES) <= fail_times:
        raise ConnectionError(f"try {len(EAGER_TRIES)}")
    return len(EAGER_TRIES)


@pytest.fixture
def eager():
    app = Flask("eager-retry")
    app.config.update(
        CELERY_ALWAYS_EAGER=True,
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    )
    EAGER_TRIES.clear()
    with app.app_context():
        yield Celery(app)


def test_eager_retries_until_success(eager):
    future = eager.options(retries=3, retry_on=ConnectionError, retry_backoff=60).submit(
        eager_flaky, 2
    )
    assert future.result(timeout=1) == 3  # at once: eager mode does not wait the backoff
    assert len(EAGER_TRIES) == 3


def test_eager_retries_exhausted_and_not_retried(eager):
    future = eager.options(retries=1, retry_on=ConnectionError).submit(eager_flaky, 5)
    error = future.exception(timeout=1)
    assert type(error) is ConnectionError and str(error) == "try 2"
    EAGER_TRIES.clear()
    future = eager.options(retries=3, retry_on=KeyError).submit(eager_flaky, 5)
    assert str(future.exception(timeout=1)) == "try 1" and len(EAGER_TRIES) == 1


def test_eager_map_retries(eager):
    pool = eager.options(retries=2, retry_on=ConnectionError, retry_backoff=60).map(
        eager_flaky, [1], [1]
    )
    # the first call fails once; the shared counter lets the second pass at once
    assert pool.result(timeout=1) == [2, 3]
