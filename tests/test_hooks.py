"""Each core hook, exercised by a small plugin, as a plugin author would use it."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_execute import Celery, ConfigurationError, Future, FuturePool, hookimpl


def eager_app(**config):
    app = Flask(__name__)
    app.config.update(CELERY_ALWAYS_EAGER=True, **config)
    return app


class ConfigPlugin:
    @hookimpl
    def flask_execute_add_config_keys(self):
        return {"CELERY_GREETING": "hello"}

    @hookimpl
    def flask_execute_validate_config(self, app, config):
        if not isinstance(config["CELERY_GREETING"], str):
            raise ConfigurationError("CELERY_GREETING must be a string")

    @hookimpl
    def flask_execute_configure_celery(self, app, settings):
        settings.setdefault("task_default_queue", "from-plugin")
        settings["worker_prefetch_multiplier"] = 7  # an override

    @hookimpl
    def flask_execute_init_app(self, app, state):
        app.config["INITIALISED_WITH"] = state.celery_app.main


def test_configuration_hooks():
    app = eager_app(CELERY_WORKER_PREFETCH_MULTIPLIER=2, CELERY_TASK_DEFAULT_QUEUE="user")
    celery = Celery(app, plugins=[ConfigPlugin()])
    assert app.config["CELERY_GREETING"] == "hello"  # declared key gets its default
    conf = celery.celery_app.conf
    assert "greeting" not in conf  # declared keys are not forwarded
    assert conf.task_default_queue == "user"  # setdefault yields to the user
    assert conf.worker_prefetch_multiplier == 7  # assignment overrides
    assert app.config["INITIALISED_WITH"] == __name__
    bad = eager_app(CELERY_GREETING=3)
    with pytest.raises(ConfigurationError, match="CELERY_GREETING"):
        Celery(bad, plugins=[ConfigPlugin()])


class TaggedFuture(Future):
    tag = "custom"


class FuturesPlugin:
    @hookimpl
    def flask_execute_make_future(self, state, task_id, name):
        return TaggedFuture(task_id, state, name)

    @hookimpl
    def flask_execute_make_pool(self, state, futures):
        pool = FuturePool(futures)
        pool.tag = "custom-pool"
        return pool


def test_future_hooks():
    celery = Celery(eager_app(), plugins=[FuturesPlugin()])
    future = celery.submit(pow, 2, 5)
    assert isinstance(future, TaggedFuture) and future.result() == 32
    pool = celery.map(pow, [2, 2], [3, 2])
    assert pool.tag == "custom-pool" and pool.result() == [4, 9]


class SendSpy:
    def __init__(self):
        self.before = 0
        self.sent = []

    @hookimpl
    def flask_execute_before_send(self, state):
        self.before += 1

    @hookimpl(wrapper=True)
    def flask_execute_send(self, state, messages):
        self.sent.extend(m.name for m in messages)
        return (yield)


def test_send_hooks_wrap_dispatch_and_prepare_once(basic_app, basic_worker):
    spy = SendSpy()
    state = basic_app.celery.state()
    state.pm.register(spy)
    try:
        state._prepared = False
        basic_app.celery.submit(basic_app.add, 1, 2).result(timeout=10)
        basic_app.celery.map(basic_app.add, [1, 1], [2, 2]).result(timeout=10)
    finally:
        state.pm.unregister(spy)
    assert spy.before == 1
    assert spy.sent == ["tests.apps.basic.add"] * 3


def test_before_send_is_not_called_in_eager_mode():
    spy = SendSpy()
    celery = Celery(eager_app(), plugins=[spy])
    celery.submit(pow, 2, 2).result()
    assert spy.before == 0 and spy.sent == ["builtins.pow"]


class RecordingSource:
    """A result source for a backend without pub/sub: resolves nothing by itself."""

    def __init__(self, state):
        self.state = state
        self.watched = []

    def start(self):
        pass

    def stop(self):
        pass

    def submitted(self, task_id, name):
        self.watched.append(task_id)

    def watch(self, task_id):
        self.watched.append(task_id)

    def lookup(self, task_id):
        return None

    def is_listener_thread(self):
        return False


def test_result_source_hook(basic_app, basic_worker):
    class Plugin:
        source = None

        @hookimpl
        def flask_execute_make_result_source(self, state):
            Plugin.source = RecordingSource(state)
            return Plugin.source

    app = Flask("source-app")
    app.config.update(
        CELERY_BROKER_URL=basic_app.app.config["CELERY_BROKER_URL"],
        CELERY_TASK_DEFAULT_QUEUE="basic",
        CELERY_START_LOCAL_WORKERS=False,
        SECRET_KEY="test-secret",
    )
    celery = Celery(app, plugins=[Plugin()])
    future = celery.submit(basic_app.add, 2, 3)
    assert Plugin.source.watched == [future.id]
    # our source feeds the future: deliver what the worker stored
    from tests.helpers import wait_for

    meta = wait_for(
        lambda: (
            (m := basic_app.celery.state().source().lookup(future.id))
            and m["status"] == "SUCCESS"
            and m
        ),
        timeout=10,
        message="stored result",
    )
    celery.state().deliver(future.id, meta)
    assert future.result(timeout=1) == 5
