"""An unreachable broker fails submit() within CELERY_SUBMIT_TIMEOUT, naming the URL and
saying that nothing was published; nothing is left pending.

Stalled, restarted and abandoned brokers are in ``test_faults_broker.py``.
"""

from __future__ import annotations

import re
import time

import pytest
from flask import Flask

from flask_execute import BrokerUnavailable, Celery, UnknownTaskError
from tests.helpers import wait_for


@pytest.mark.timeout(30)
def test_unreachable_broker_fails_within_the_bound(broker_url):
    app = Flask(__name__)
    app.config.update(
        CELERY_BROKER_URL="redis://:hunter2@127.0.0.1:1/0",
        CELERY_RESULT_BACKEND=broker_url,
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_SUBMIT_TIMEOUT=2,
    )
    celery = Celery(app)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        celery.submit(print, 1)
    assert time.monotonic() - started < 2 + 1
    assert "redis://:**@127.0.0.1:1/0" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert not info.value.may_arrive and info.value.maybe_sent == ()
    (task_id,) = info.value.task_ids
    assert f"nothing was published (task id {task_id})" in str(info.value)
    assert celery.state().futures.pending_ids() == []
    # Nor is any record of it left in the backend for another process to wait on: the
    # PENDING marker written as it was sent is erased. A marker queued after the
    # failure shows that the writer is past it.
    source = celery.state().futures.source()
    backend = celery.celery_app.backend
    source.submitted("sentinel-" + task_id, None)
    sentinel = backend.get_key_for_task("sentinel-" + task_id)
    wait_for(lambda: backend.client.exists(sentinel), timeout=5, message="marker writer")
    backend.client.delete(sentinel)
    assert not backend.client.exists(backend.get_key_for_task(task_id))
    with pytest.raises(UnknownTaskError):
        celery.get(task_id)


@pytest.mark.timeout(30)
def test_unreachable_result_backend_fails_within_the_bound():
    app = Flask(__name__)
    app.config.update(
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_SUBMIT_TIMEOUT=2,
    )
    celery = Celery(app)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1") as info:
        celery.submit(print, 1)
    took = time.monotonic() - started
    assert took < 2 + 1
    assert not info.value.may_arrive and "nothing was published" in str(info.value)
    # Only the broker was set: the backend is the broker, and the error says so, with
    # the time it really took (refused at once), not the bound it did not need.
    message = str(info.value)
    assert "fix CELERY_BROKER_URL (the result backend is the broker" in message
    given_up = re.search(r"gave up after (\d+\.\d+)s", message)
    assert given_up and float(given_up.group(1)) <= took
    assert "within" not in message
