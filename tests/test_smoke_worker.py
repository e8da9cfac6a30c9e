from __future__ import annotations


def test_submit_reaches_real_worker(basic_app, basic_worker):
    future = basic_app.celery.submit(basic_app.add, 1, 2)
    assert future.result(timeout=10) == 3
