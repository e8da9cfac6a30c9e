"""``celery.options(...)``: every option checked when given, at the call site, with
nothing published; the options as a registered task's defaults.

The app's broker is a port nothing listens on: a call that got as far as sending would
raise BrokerUnavailable instead of the error each test expects.
"""

from __future__ import annotations

import pytest
from flask import Flask

from flask_execute import Celery
from flask_execute.plans import OPTIONS

pytestmark = pytest.mark.timeout(30)


def add(x, y):
    return x + y


@pytest.fixture
def celery():
    app = Flask(__name__)
    app.config.update(
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_SUBMIT_TIMEOUT=0.5,
    )
    ext = Celery(app)
    with app.app_context():
        yield ext


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"retries": -1, "retry_on": OSError}, ValueError, "retries must be a whole number"),
        ({"retries": 1.5, "retry_on": OSError}, ValueError, "retries must be a whole number"),
        ({"time_limit": 0}, ValueError, "time_limit must be a number of seconds above 0"),
        ({"soft_time_limit": -2}, ValueError, "soft_time_limit must be"),
        ({"key": ["report", 42]}, TypeError, r"key must be a non-empty string, not \['report'"),
        ({"key": 42}, TypeError, "key must be a non-empty string"),
        ({"key": ""}, TypeError, "key must be a non-empty string"),
        ({"retry_on": "IOError", "retries": 2}, TypeError, "retry_on must be an exception class"),
        ({"retry_on": (OSError, int), "retries": 2}, TypeError, "retry_on must be"),
        ({"retry_jitter": "yes"}, TypeError, "retry_jitter must be True or False"),
        ({"priority": 300}, ValueError, "priority must be a whole number from 0 to 255"),
        ({"queue": ""}, TypeError, "queue must be a queue name"),
        ({"countdown": -1}, ValueError, "countdown must be"),
        ({"key_keep": -1, "key": "k"}, ValueError, "key_keep must be"),
    ],
)
def test_a_bad_value_fails_when_given_naming_the_option(celery, options, error, match):
    with pytest.raises(error, match=match):
        celery.options(**options)
    with pytest.raises(error, match=match):  # and through apply, which reads them too
        celery.apply(add, (1, 2), **options)


def test_an_unknown_option_lists_the_valid_ones(celery):
    with pytest.raises(TypeError, match="unknown option 'retry'") as info:
        celery.options(retry=3)
    assert all(name in str(info.value) for name in OPTIONS)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"retries": 3}, "retry_on is missing: name the exception types"),
        ({"retry_backoff": 2}, "retry_on is missing"),
        ({"retry_on": OSError}, "retries is missing"),
        ({"key_keep": 10}, "key_keep needs a key"),
    ],
)
def test_options_that_need_each_other_fail_at_the_send(celery, options, match):
    with pytest.raises(TypeError, match=match):
        celery.options(**options).submit(add, 1, 2)


def test_a_soft_limit_must_be_below_the_hard_one(celery):
    with pytest.raises(ValueError, match=r"soft_time_limit \(5\) must be below time_limit \(5\)"):
        celery.options(time_limit=5, soft_time_limit=5).submit(add, 1, 2)


def test_a_map_refuses_a_key_and_a_chunk_size_with_a_time_limit(celery):
    with pytest.raises(TypeError, match="key names one call"):
        celery.options(key="k").map(add, (1, 2))
    with pytest.raises(ValueError, match="chunksize=10 cannot go with a time limit"):
        celery.options(chunksize=10, time_limit=5).map(add, (1, 2))


def test_options_are_a_registered_tasks_defaults(celery):
    opts = celery.options(queue="reports", retries=3, retry_on=OSError, time_limit=9)

    @opts.task
    def build(report_id):
        return report_id

    @opts.task(name="named.build")
    def build2(report_id):
        return report_id

    task = build.task()
    assert task.queue == "reports" and task.max_retries == 3 and task.time_limit == 9
    assert task.autoretry_for == (OSError,)
    assert build2.task().name == "named.build" and build2.task().max_retries == 3
    for sending in ({"countdown": 3}, {"key": "k"}, {"chunksize": 2}):
        with pytest.raises(TypeError, match="cannot be a registered task's default"):
            celery.options(**sending).task(add)


def test_a_map_refuses_retries_with_a_time_limit(celery):
    with pytest.raises(ValueError, match="retries and time_limit/soft_time_limit cannot go"):
        celery.options(time_limit=5, retries=1, retry_on=OSError).map(add, (1, 2))


def test_an_executor_refuses_a_key_and_a_batch(celery):
    with pytest.raises(TypeError, match="option key names one call, and an executor"):
        celery.executor(key="k")
    executor = celery.executor()
    with celery.batch(), pytest.raises(RuntimeError, match=r"inside celery\.batch"):
        executor.submit(add, 1, 2)
