"""``@celery.task``: registration, delay/apply_async futures, both app patterns, eager."""

from __future__ import annotations

import uuid
from pathlib import Path

import celery as celery_pkg
import pytest
import redis
from celery import states
from flask import Flask, current_app

from flask_execute import Celery, ConfigurationError, Future, current_task
from flask_execute.registry import RegisteredTask
from tests import helpers
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)

FACTORY_PATH = "tests.apps.factory_pkg.app:create_app"


class Oops(Exception):
    """Module level: Celery rebuilds a registered task's exception by its import path."""


def _worker(app_module_path, celery_app, broker_url, tmp_path_factory, session_pids, queue):
    log = Path(tmp_path_factory.mktemp(queue)) / "worker.log"
    proc = helpers.start_worker(
        app_module_path, broker_url, log, name=f"{queue}@%h", queues=queue, concurrency=1
    )
    session_pids.add(proc.pid)
    try:
        helpers.wait_worker_ready(celery_app, proc, log, name_prefix=f"{queue}@")
    except BaseException:
        helpers.stop_process_tree(proc)
        session_pids.discard(proc.pid)
        raise
    return proc, log


@pytest.fixture(scope="module")
def tasks_app():
    import tests.apps.tasks_app as module

    return module


@pytest.fixture(scope="module")
def tasks_worker(tasks_app, broker_url, tmp_path_factory, session_pids):
    proc, _ = _worker(
        "tests.apps.tasks_app:app",
        tasks_app.celery.celery_app,
        broker_url,
        tmp_path_factory,
        session_pids,
        "tasks_app",
    )
    yield proc
    helpers.stop_process_tree(proc)
    session_pids.discard(proc.pid)


@pytest.fixture(scope="module")
def factory_app():
    from tests.apps.factory_pkg.app import create_app

    return create_app()


@pytest.fixture(scope="module")
def factory_worker(factory_app, broker_url, tmp_path_factory, session_pids):
    from tests.apps.factory_pkg.extensions import celery

    with factory_app.app_context():
        celery_app = celery.celery_app
    proc, _ = _worker(
        FACTORY_PATH, celery_app, broker_url, tmp_path_factory, session_pids, "factory_app"
    )
    yield proc
    helpers.stop_process_tree(proc)
    session_pids.discard(proc.pid)


# -- a real worker, direct pattern -----------------------------------------------------


def test_delay_returns_our_future_with_the_plain_result(tasks_app, tasks_worker):
    future = tasks_app.add.delay(1, 2)
    assert isinstance(future, Future)
    assert future.name == "tests.apps.tasks_app.add"
    assert future.result(timeout=15) == 3
    assert future.state == states.SUCCESS
    # the decorated object is still the plain function
    assert tasks_app.add(2, 3) == 5
    assert tasks_app.add.__name__ == "add" and tasks_app.add.__wrapped__(1, 1) == 2


def test_apply_async_and_the_registry_access_of_the_guide(tasks_app, tasks_worker):
    celery = tasks_app.celery
    assert celery.task.add is tasks_app.add
    assert celery.task["test"] is tasks_app.marker
    assert celery.task["tests.apps.tasks_app.add"] is tasks_app.add
    assert celery.task.add.delay(4, 5).result(timeout=15) == 9
    assert tasks_app.add.apply_async((1, 1), countdown=0).result(timeout=15) == 2
    # registered tasks run in the application context, like submitted functions
    assert celery.task["test"].delay().result(timeout=15) == "tasks-app"
    assert tasks_app.add.s(2, 2).delay().result(timeout=15) == 4


def test_task_options_bind_retries_and_rate_limit(tasks_app, tasks_worker):
    assert tasks_app.flaky.delay(3).result(timeout=15) == 2  # retried twice, then succeeded
    name, rate_limit, bound = tasks_app.whoami.delay().result(timeout=15)
    assert (name, rate_limit, bound) == ("tests.apps.tasks_app.whoami", "100/s", True)
    assert tasks_app.flaky.max_retries == 3


def test_exception_is_reraised_with_its_type(tasks_app, tasks_worker):
    future = tasks_app.fail.delay("broken")
    with pytest.raises(tasks_app.Unusual, match="broken"):
        future.result(timeout=15)
    assert future.state == states.FAILURE


def test_progress_of_a_registered_task_reaches_the_future(tasks_app, tasks_worker):
    release = f"release:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(tasks_app.app.config["CELERY_BROKER_URL"])
    future = tasks_app.progress.delay(3, release)
    seen = []
    future.add_progress_callback(lambda f: seen.append(f.info))
    try:
        wait_for(lambda: future.state == "PROGRESS" and future.info == {"step": 3}, timeout=15)
    finally:
        client.rpush(release, 1)
        client.expire(release, 60)
    assert future.result(timeout=15) == 3
    assert {"step": 3} in seen


def test_submit_of_a_registered_function_runs_it_plainly(tasks_app, tasks_worker):
    # a registered function travels by reference, like any module-level function
    assert tasks_app.celery.submit(tasks_app.add, 20, 22).result(timeout=15) == 42


# -- a real worker, factory pattern ----------------------------------------------------


def test_factory_app_tasks_bind_at_init_app_and_run_on_its_worker(factory_app, factory_worker):
    from tests.apps.factory_pkg import tasks
    from tests.apps.factory_pkg.extensions import celery

    with factory_app.app_context():
        future = tasks.add.delay(1, 2)
        assert isinstance(future, Future)
        assert future.result(timeout=15) == 3
        assert celery.task.add.delay(1, 2).result(timeout=15) == 3
        assert celery.task["factory.marker"].delay().result(timeout=15) == "factory-app"
        conf = celery.celery_app.conf
        assert (
            conf.beat_schedule["factory-nightly"]["task"] == "tests.apps.factory_pkg.tasks.nightly"
        )


# -- eager mode ------------------------------------------------------------------------


def _eager_app(**config):
    app = Flask(f"eager_{uuid.uuid4().hex[:6]}")
    app.config.update(
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
        CELERY_ALWAYS_EAGER=True,
        CELERY_BROKER_URL="memory://",
        CELERY_RESULT_BACKEND="cache+memory://",
        MARKER="eager",
        **config,
    )
    return app


def test_eager_direct_pattern():
    app = _eager_app()
    celery = Celery(app)

    @celery.task
    def add(x, y):
        return [x + y, current_app.config["MARKER"], bool(current_task)]

    assert isinstance(add, RegisteredTask)
    future = add.delay(1, 2)
    assert isinstance(future, Future) and future.done()
    assert future.result() == [3, "eager", True]
    assert add.apply_async((2, 2)).result() == [4, "eager", True]


def test_eager_factory_pattern_binds_tasks_declared_before_init_app():
    celery = Celery()

    @celery.task(name="early")
    def early(x):
        return x * 2

    app = _eager_app()
    celery.init_app(app)
    assert early.delay(21).result() == 42
    assert celery.task["early"].delay(1).result() == 2
    assert celery.task.early is early


def test_eager_failure_and_status_updates():
    app = _eager_app()
    celery = Celery(app)

    @celery.task
    def fail():
        raise Oops("eager failure")

    @celery.task(bind=True)
    def progress(self):
        current_task.update_state(state="PROGRESS", meta={"half": True})
        seen = celery.get(self.request.id)
        first = (seen.state, seen.info)
        self.update_state(state="PROGRESS", meta={"full": True})
        return [first, [seen.state, seen.info]]

    with pytest.raises(Oops, match="eager failure"):
        fail.delay().result()
    assert progress.delay().result() == [("PROGRESS", {"half": True}), ["PROGRESS", {"full": True}]]


def test_base_task_keeps_its_behaviour_and_gets_the_app_context():
    calls = []

    class Audited(celery_pkg.Task):
        def on_success(self, retval, task_id, args, kwargs):
            calls.append(("success", retval))

    app = _eager_app()
    celery = Celery(app, base_task=Audited)

    @celery.task
    def marker():
        return current_app.config["MARKER"]

    assert marker.delay().result() == "eager"
    assert calls == [("success", "eager")]
    assert isinstance(marker.task(), Audited)


def test_one_extension_serving_two_apps():
    celery = Celery()

    @celery.task
    def which():
        return current_app.name

    first, second = _eager_app(), _eager_app()
    celery.init_app(first)
    celery.init_app(second)
    with first.app_context():
        assert which.delay().result() == first.name
    with second.app_context():
        assert which.delay().result() == second.name
    with pytest.raises(RuntimeError, match="application context"):
        which.delay()


def test_blocking_the_tasks_plugin_keeps_tasks_off_the_app():
    celery = Celery()

    @celery.task
    def kept_off():
        return 1

    app = _eager_app(CELERY_DISABLED_PLUGINS=["tasks"])  # held: the extension refs it weakly
    celery.init_app(app)
    with pytest.raises(RuntimeError, match="CELERY_DISABLED_PLUGINS"):
        kept_off.delay()
    assert kept_off() == 1


# -- errors at decoration time ---------------------------------------------------------


def test_decoration_errors_are_early_and_clear():
    celery = Celery()
    with pytest.raises(TypeError, match="decorates a function"):
        celery.task(42)
    with pytest.raises(ConfigurationError, match="non-empty string"):
        celery.task(name=3)
    with pytest.raises(ConfigurationError, match="shared="):
        celery.task(shared=True)

    @celery.task
    def once():
        return 1

    with pytest.raises(ConfigurationError, match="registered already"):
        celery.task(name="again")(once)
    assert celery.task(once) is once
    with pytest.raises(AttributeError, match="registered: once"):
        celery.task.missing  # noqa: B018
    with pytest.raises(KeyError, match="missing"):
        celery.task["missing"]
    assert "once" in celery.task and "missing" not in celery.task
    assert list(celery.task) == [once] and len(celery.task) == 1
