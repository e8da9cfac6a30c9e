"""Futures as arguments: a call waits in Redis for its inputs, then runs with their
results, on real workers."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

from flask_execute import DependencyFailed, FuturePool

pytestmark = pytest.mark.timeout(120)


def test_a_future_passed_as_an_argument_gives_its_result(celery, m):
    first = celery.submit(m.sleep, 0.3)
    second = celery.submit(m.add, first, 10)
    assert second.result(timeout=30) == 10.3


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


def test_a_cancelled_input_fails_the_call(celery, m):
    slow = celery.submit(m.sleep, 5)
    after = celery.submit(m.add, slow, 1)
    assert slow.cancel()
    with pytest.raises(DependencyFailed, match="was cancelled"):
        after.result(timeout=30)
    assert not isinstance(after.exception(), cf.CancelledError)
