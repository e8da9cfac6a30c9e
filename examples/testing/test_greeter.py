"""Tests of greeter.py with flask_execute's pytest fixtures.

``execute_eager`` runs every call in this process, at once; ``execute_worker`` starts
the app's own worker for the test, with this test's config, and stops it afterwards.
Both take the ``app`` fixture below. Run with ``pytest`` from this folder; the tests'
Redis database comes from ``GREETER_TEST_BROKER``.
"""

import os

import pytest
from greeter import create_app, greet, worker_pid

TEST_BROKER = os.environ.get("GREETER_TEST_BROKER", "redis://localhost:6379/15")


@pytest.fixture
def app(tmp_path):
    return create_app(
        {
            "TESTING": True,
            "CELERY_BROKER_URL": TEST_BROKER,  # a Redis database for the tests only
            "CELERY_LOG_DIR": str(tmp_path),  # the worker's log, kept with the test
            "GREETING": "Hello from the test",  # reaches the worker too
        }
    )


def test_greet_runs_eagerly(execute_eager):
    future = execute_eager.submit(greet, "Ada")
    assert future.done()
    assert future.result() == "Hello from the test, Ada!"


def test_view_runs_eagerly(app, execute_eager):
    response = app.test_client().get("/greet/Ada")
    assert response.json == {"greeting": "Hello from the test, Ada!"}


def test_greet_runs_on_a_worker(execute_worker):
    assert execute_worker.submit(greet, "Ada").result(timeout=30) == "Hello from the test, Ada!"
    assert execute_worker.submit(worker_pid).result(timeout=30) != os.getpid()


def test_view_runs_on_a_worker(app, execute_worker):
    response = app.test_client().get("/greet/Grace")
    assert response.json == {"greeting": "Hello from the test, Grace!"}
