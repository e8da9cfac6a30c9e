"""Per-call time limits (``celery.options(time_limit=..., soft_time_limit=...)``) on a
real prefork worker: the soft limit raises inside the function, the hard one ends the
call, and the Future says which limit hit; eager mode ignores them.
"""

from __future__ import annotations

import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from flask import Flask

from flask_execute import Celery, HardTimeLimitError, SoftTimeLimitError, TimeLimitError
from flask_execute.errors import RemoteTraceback

pytestmark = pytest.mark.timeout(120)


def test_the_soft_limit_raises_inside_the_function_which_can_clean_up(celery):
    def careful():
        import time

        from celery.exceptions import SoftTimeLimitExceeded

        try:
            time.sleep(30)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "slept"

    future = celery.options(soft_time_limit=0.5, time_limit=20).submit(careful)
    assert future.result(timeout=30) == "cleaned up"


def test_a_soft_limit_let_out_fails_the_future_saying_which_limit(celery):
    def sleepy():
        import time

        time.sleep(30)

    future = celery.options(soft_time_limit=0.5).submit(sleepy)
    error = future.exception(timeout=30)
    assert type(error) is SoftTimeLimitError and error.seconds == 0.5
    assert str(error) == "soft time limit (0.5s) exceeded"
    assert isinstance(error, SoftTimeLimitExceeded) and isinstance(error, TimeLimitError)
    assert isinstance(error.__cause__, RemoteTraceback) and "in sleepy" in str(error.__cause__)
    with pytest.raises(SoftTimeLimitExceeded, match=r"soft time limit \(0.5s\)"):
        future.result(timeout=1)


def test_the_hard_limit_ends_the_call_and_the_worker_goes_on(celery, m):
    def stubborn():
        import contextlib
        import time

        from celery.exceptions import SoftTimeLimitExceeded

        for _ in range(60):
            with contextlib.suppress(SoftTimeLimitExceeded):  # it ignores its soft limit
                time.sleep(1)

    future = celery.options(soft_time_limit=0.5, time_limit=1.5).submit(stubborn)
    error = future.exception(timeout=60)
    assert type(error) is HardTimeLimitError and error.seconds == 1.5
    assert str(error) == "hard time limit (1.5s) exceeded"
    assert isinstance(error, TimeLimitExceeded) and error.limit == "hard"
    # The worker replaced the process it killed: the next calls run.
    pool = celery.options(chunksize=1).map(m.add, *[(i, 1) for i in range(4)])
    assert pool.result(timeout=30) == [1, 2, 3, 4]


def test_get_reports_the_hard_limit_too(celery):
    def forever():
        import time

        time.sleep(60)

    future = celery.options(time_limit=1).submit(forever)
    future.exception(timeout=60)
    error = celery.get(future.id).exception(timeout=10)  # read back from the backend
    assert type(error) is HardTimeLimitError and str(error) == "hard time limit (1s) exceeded"


def test_map_with_a_soft_limit_fails_only_the_slow_call(celery):
    def nap(seconds):
        import time

        time.sleep(seconds)
        return seconds

    pool = celery.options(soft_time_limit=1).map(nap, [0], [30], [0.1])
    assert pool[0].result(timeout=30) == 0 and pool[2].result(timeout=30) == 0.1
    error = pool[1].exception(timeout=30)
    assert type(error) is SoftTimeLimitError and error.seconds == 1


def test_a_soft_limit_can_be_retried(celery, broker_url):
    import uuid

    import redis

    key = f"limit-tries-{uuid.uuid4().hex}"

    def slow_then_quick():
        import time

        import redis

        if redis.Redis.from_url(broker_url).incr(key) == 1:
            time.sleep(30)
        return "quick"

    options = celery.options(soft_time_limit=0.5, retries=1, retry_on=SoftTimeLimitExceeded)
    future = options.options(retry_backoff=0.05).submit(slow_then_quick)
    assert future.result(timeout=30) == "quick"
    client = redis.Redis.from_url(broker_url)
    assert client.get(key) == b"2"
    client.delete(key)


def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def test_eager_mode_ignores_the_limits():
    app = Flask("eager-limits")
    app.config.update(
        CELERY_ALWAYS_EAGER=True,
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    )
    celery = Celery(app)
    with app.app_context():
        future = celery.options(soft_time_limit=0.01, time_limit=0.02).submit(slow, 0.1)
        assert future.result(timeout=5) == "done"
