"""Futures as arguments: a call waits in Redis for its inputs, then runs with their
results, on real workers."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

from flask_execute import DependencyFailed, FuturePool
from tests import helpers

pytestmark = pytest.mark.timeout(120)


def _held(celery, task_id):
    """Whether the call ``task_id`` waits in Redis for its inputs (not yet published)."""
    import redis

    key = f"flask_execute:waiting:{celery.celery_app.main}:msg:{task_id}"
    return redis.Redis.from_url(celery.celery_app.conf.broker_url).exists(key) == 1


def test_a_future_passed_as_an_argument_gives_its_result(celery, m, gate):
    release, key = gate
    first = celery.submit(m.wait_for_release, key, 5)
    second = celery.submit(m.add, first, 10)
    assert _held(celery, second.id) and second.state == "PENDING"
    release()
    assert second.result(timeout=30) == 15
    assert not _held(celery, second.id)


def test_a_call_cancelled_while_it_waits_is_never_sent(celery, m, gate):
    release, key = gate
    first = celery.submit(m.wait_for_release, key, 5)
    second = celery.submit(m.add, first, 10)
    third = celery.submit(m.add, second, 1)
    assert second.cancel() and not _held(celery, second.id)
    assert celery.state().celery_app.AsyncResult(second.id).state == "REVOKED"
    with pytest.raises(DependencyFailed, match=r"positional argument 0 .* was cancelled"):
        third.result(timeout=30)  # released at once: its input ended (revoked)
    release()
    assert first.result(timeout=30) == 5


def test_futures_inside_lists_and_dicts_and_as_keywords(celery, m):
    a, b = celery.submit(m.add, 1, 2), celery.submit(m.add, 3, 4)

    def combine(items, mapping, y):
        return [*items, mapping["b"], y]

    f = celery.submit(combine, [a, 5], {"b": b}, y=a)
    assert f.result(timeout=30) == [3, 5, 7, 3]


def test_a_chain_of_calls(celery, m):
    f = celery.submit(m.add, 0, 1)
    for _ in range(20):
        f = celery.submit(m.add, f, 1)
    assert f.result(timeout=60) == 21


def test_a_failed_input_fails_the_call_naming_it(celery, m):
    def boom():
        raise KeyError("nope")

    bad = celery.submit(boom)
    after = celery.submit(m.add, 1, bad)
    with pytest.raises(
        DependencyFailed, match=r"positional argument 1 .* failed with KeyError"
    ) as info:
        after.result(timeout=30)
    assert isinstance(info.value.__cause__, KeyError)


def test_map_takes_futures_and_the_calls_of_a_map_are_inputs(celery, m):
    pool = celery.map(m.add, *[(i, i) for i in range(5)])
    doubled = celery.map(m.add, *[(f, 1) for f in pool])
    assert isinstance(doubled, FuturePool)
    assert doubled.result(timeout=30) == [2 * i + 1 for i in range(5)]
    total = celery.submit(sum, list(pool))
    assert total.result(timeout=30) == 20


def test_a_cancelled_input_fails_the_call(celery, m, gate):
    _, key = gate
    slow = celery.submit(m.wait_for_release, key)
    after = celery.submit(m.add, slow, 1)
    assert slow.cancel()  # terminated at once (this app's CELERY_CANCEL_GRACE is 0)
    with pytest.raises(DependencyFailed, match="was cancelled"):
        after.result(timeout=30)
    assert not isinstance(after.exception(), cf.CancelledError)


def test_calls_still_run_after_the_web_process_that_sent_them_exits(celery, m):
    env = helpers.test_env(FLASK_EXECUTE_TEST_BROKER=celery.celery_app.conf.broker_url)
    proc = helpers.start_script("tests.apps.compose_exit", env)
    try:
        first, second, third = helpers.read_line(proc, "IDS").split()
        assert proc.wait(timeout=30) == 0
    finally:
        helpers.stop_process_tree(proc)
    # Nobody here followed the first call: a worker's sweep releases the second, and
    # the worker that ran the second releases the third.
    assert celery.get(third).result(timeout=30) == 3.0
    assert celery.get(second).result(timeout=5) == 2.0


def test_a_chain_of_a_thousand_calls(celery, m):
    f = celery.submit(m.add, 0, 0)
    for _ in range(1000):
        f = celery.submit(m.add, f, 1)
    assert f.result(timeout=110) == 1000


def test_a_task_may_submit_calls_but_never_wait_for_them(celery, m):
    def parent(x):
        from tests.apps.basic import add, celery, sleep

        child = celery.submit(sleep, x)  # still running when the wait below begins
        then = celery.submit(add, child, 1)  # waits in Redis, not in this process
        try:
            child.result(timeout=5)
        except RuntimeError as exc:
            return then.id, str(exc)
        return then.id, "not refused"

    then_id, refused = celery.submit(parent, 1.0).result(timeout=30)
    assert "waits for a Future that is not done" in refused
    assert "allow_join_result" in refused
    assert celery.get(then_id).result(timeout=30) == 2.0


def test_a_future_of_another_application_is_refused_before_anything_is_sent(celery, m):
    from flask import Flask

    from flask_execute import Celery, Future

    other_app = Flask("other")
    other_app.config["CELERY_ALWAYS_EAGER"] = True
    other = Celery(other_app).submit(m.add, 1, 1)
    with pytest.raises(ValueError, match=r"positional argument 0 is .* another application"):
        celery.submit(m.add, other, 1)
    with pytest.raises(ValueError, match=r"keyword argument 'y' is .* no application"):
        celery.submit(m.add, 1, y=Future("made-by-hand"))


def _eager(**config):
    from flask import Flask

    from flask_execute import Celery

    app = Flask(f"compose_eager_{len(config)}")
    app.config.update(CELERY_ALWAYS_EAGER=True, **config)
    return Celery(app)


def _fail():
    raise ValueError("bad input")


def test_eager_mode_passes_results_and_failures_along():
    celery = _eager()
    first = celery.submit(pow, 2, 3)
    assert celery.submit(pow, first, 2).result() == 64
    assert celery.map(pow, [first, 1], [first, 2]).result() == [8, 64]
    with pytest.raises(DependencyFailed, match=r"positional argument 0 .* ValueError: bad input"):
        celery.submit(pow, celery.submit(_fail), 2).result()


def test_a_backend_that_is_not_redis_is_refused_with_nothing_sent():
    from flask import Flask

    from flask_execute import Celery, ConfigurationError

    app = Flask("compose_not_redis")
    app.config.update(CELERY_RESULT_BACKEND="cache+memory://", **helpers.DEAD_BROKER)
    celery = Celery(app)
    first = helpers.input_future(celery)
    with pytest.raises(ConfigurationError, match="needs a Redis result backend"):
        celery.submit(pow, first, 2)
