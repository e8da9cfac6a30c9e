"""Every default plugin can be blocked, with a defined outcome.

Either the feature is off and everything else works, or ``init_app`` fails at once with
a ConfigurationError that names the hook left without an answer and how to provide one.
Never an AttributeError, a KeyError, a silently wrong result, or a message published
while eager mode is on.
"""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
import redis
from flask import Flask, has_app_context

from flask_execute import (
    Celery,
    ConfigurationError,
    FuturePool,
    ServiceError,
    current_task,
    hookimpl,
)
from flask_execute.manager import DEFAULT_PLUGINS, REQUIRED_HOOKS
from flask_execute.plugins.serializer import CloudpickleSerializer
from tests import helpers
from tests.apps import services_app

BLOCKED_FAILS = {"cloudpickle", "dispatch", "futures"}


#: The apps made here: the extension holds its apps weakly, and a test that passes one
#: straight to ``Celery(...)`` must not see it collected half-way.
_APPS: list[Flask] = []


def app_blocking(*names: str, **config: object) -> Flask:
    app = Flask(f"blocking_{'_'.join(names) or 'none'}")
    app.config.update(CELERY_ALWAYS_EAGER=True, CELERY_DISABLED_PLUGINS=list(names), **config)
    _APPS.append(app)
    return app


def test_every_default_plugin_has_a_blocking_test():
    names = [name for name in globals() if name.startswith("test_blocking_")]
    defaults = {name for name, _ in DEFAULT_PLUGINS}
    tested = {
        d
        for d in defaults
        if any(n == f"test_blocking_{d}" or n.startswith(f"test_blocking_{d}_") for n in names)
    }
    assert defaults <= tested | BLOCKED_FAILS, sorted(defaults - tested - BLOCKED_FAILS)
    # each default answering a required hook fails init_app when blocked
    assert set(REQUIRED_HOOKS.values()) == BLOCKED_FAILS


@pytest.mark.parametrize(
    ("name", "hook"),
    sorted((default, hook) for hook, default in REQUIRED_HOOKS.items()),
)
def test_blocking_a_plugin_the_core_needs_fails_at_init_app(name, hook):
    app = app_blocking(name)
    with pytest.raises(ConfigurationError) as info:
        Celery(app)
    message = str(info.value)
    assert "no plugin answers flask_execute_" in message
    assert f"{name!r}" in message and "CELERY_DISABLED_PLUGINS" in message
    assert "register a plugin" in message
    assert "flask_execute" not in app.extensions  # nothing half-registered
    # the hook named is one this plugin answers
    assert any(h in message for h, d in REQUIRED_HOOKS.items() if d == name)


def test_a_replacement_answers_what_a_blocked_default_did():
    class Plain:
        name = "plain-pickle"

        def __init__(self):
            self.inner = CloudpickleSerializer()

        def dumps(self, obj):
            return self.inner.dumps(obj)

        def loads(self, data):
            return self.inner.loads(data)

    class Plugin:
        @hookimpl
        def flask_execute_make_serializer(self, app):
            return Plain()

    celery = Celery(app_blocking("cloudpickle"), plugins=[Plugin()])
    assert celery.submit(pow, 2, 3).result(timeout=5) == 8
    assert celery.state().wire.serializer.name == "plain-pickle"


def test_a_required_hook_answered_with_none_is_a_clear_error():
    class Undecided:
        @hookimpl
        def flask_execute_make_future(self, app, task_id, name):
            return None

        @hookimpl
        def flask_execute_make_pool(self, app, futures):
            return FuturePool(futures)

    celery = Celery(app_blocking("futures"), plugins=[Undecided()])
    with pytest.raises(ConfigurationError, match="no plugin answers flask_execute_make_future"):
        celery.submit(pow, 2, 3)


def test_the_core_cannot_be_blocked():
    with pytest.raises(ConfigurationError, match="'core', an essential plugin"):
        Celery(app_blocking("core"))


def test_disabled_plugins_must_be_a_list_of_names():
    app = app_blocking()
    app.config["CELERY_DISABLED_PLUGINS"] = "flower"
    with pytest.raises(ConfigurationError, match="CELERY_DISABLED_PLUGINS must be a list"):
        Celery(app)


def test_blocking_eager_with_eager_mode_on_fails_before_anything_is_published(broker_url):
    app = app_blocking("eager", CELERY_BROKER_URL=broker_url)
    with pytest.raises(ConfigurationError, match="'eager' plugin is blocked"):
        Celery(app)
    # eager mode off: blocking eager changes nothing
    plain = Flask("blocking_eager_off")
    plain.config.update(CELERY_BROKER_URL=broker_url, CELERY_DISABLED_PLUGINS=["eager"])
    assert not Celery(plain).state().eager


def test_blocking_eager_never_publishes_when_eager_is_switched_on_later(broker_url):
    app = Flask("blocking_eager_later")
    queue = f"never-{uuid.uuid4().hex[:8]}"
    app.config.update(
        CELERY_BROKER_URL=broker_url,
        CELERY_DISABLED_PLUGINS=["eager"],
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_TASK_DEFAULT_QUEUE=queue,
    )
    celery = Celery(app)
    celery.celery_app.conf.task_always_eager = True
    with pytest.raises(ConfigurationError, match="nothing was published"):
        celery.submit(pow, 2, 3)
    assert redis.Redis.from_url(broker_url).llen(queue) == 0


def test_blocking_config(broker_url, caplog):
    # eager: nothing of config is needed
    assert Celery(app_blocking("config")).submit(pow, 2, 3).result(timeout=5) == 8
    # the core's own keys are never taken for Celery settings
    with caplog.at_level(logging.WARNING, logger="flask_execute"):
        Celery(app_blocking("config", CELERY_SIGNING_KEYS="k" * 32))
    assert "Ignoring unknown Celery setting" not in caplog.text
    # no defaults: without a result backend, submit says so and publishes nothing
    queue = f"nobackend-{uuid.uuid4().hex[:8]}"
    app = Flask("blocking_config_real")
    app.config.update(
        CELERY_BROKER_URL=broker_url,
        CELERY_DISABLED_PLUGINS=["config"],
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    )
    celery = Celery(app)
    assert not celery.celery_app.conf.result_backend
    with pytest.raises(ConfigurationError, match="CELERY_RESULT_BACKEND"):
        celery.submit(pow, 2, 3)
    assert redis.Redis.from_url(broker_url).llen(queue) == 0


def test_blocking_appcontext():
    def inside():
        return has_app_context(), bool(current_task)

    assert Celery(app_blocking()).submit(inside).result(timeout=5) == (True, True)
    assert Celery(app_blocking("appcontext")).submit(inside).result(timeout=5) == (False, False)


def test_blocking_status():
    app = app_blocking("status", SECRET_KEY="test-secret-key-of-32-bytes-or-more")
    celery = Celery(app)
    with pytest.raises(ConfigurationError, match=r"flask_execute_make_blueprint.*'status'"):
        celery.blueprint()
    future = celery.submit(pow, 2, 3)
    assert future.result(timeout=5) == 8 and future.token  # tokens still work
    assert "CELERY_STATUS_RESULTS" not in app.config


def test_blocking_cancel():
    # What a worker then does (a cancelled task is terminated at once, and
    # current_task.cancelled stays false) is tested with a real worker in test_cancel.py.
    app = app_blocking("cancel")
    celery = Celery(app)
    state = celery.state()
    assert "CELERY_CANCEL_GRACE" not in app.config
    assert state.pm.cancel_task(app, "a-task-id") is False  # the core revokes it itself
    steps = {getattr(step, "__name__", str(step)) for step in state.celery_app.steps["consumer"]}
    assert "TerminateCancelled" not in steps
    assert "TerminateCancelled" in {
        getattr(s, "__name__", "") for s in Celery(app_blocking()).celery_app.steps["consumer"]
    }


def test_blocking_dependencies():
    app = app_blocking("dependencies")
    app.config.update(CELERY_ALWAYS_EAGER=False, **helpers.DEAD_BROKER)
    celery = Celery(app)
    first = helpers.input_future(celery)
    with pytest.raises(ConfigurationError, match=r"flask_execute_send_after.*'dependencies'"):
        celery.submit(pow, first, 2)
    # In eager mode the inputs are done: the call is sent as any, and works.
    eager = Celery(app_blocking("dependencies"))
    assert eager.submit(pow, eager.submit(pow, 2, 2), 2).result(timeout=5) == 16


def test_blocking_tasks():
    celery = Celery(app_blocking("tasks"))

    @celery.task
    def double(x):
        return 2 * x

    with pytest.raises(RuntimeError, match="'tasks' plugin is disabled"):
        double.delay(2)
    assert double(2) == 4  # a plain call still works, and so does submitting
    assert celery.submit(pow, 2, 3).result(timeout=5) == 8


def test_blocking_scheduling():
    celery = Celery(
        app_blocking("scheduling", CELERYBEAT_SCHEDULE={"cfg": {"task": "t", "schedule": 5}})
    )

    @celery.schedule(30)
    def tick():
        return "tick"

    assert set(celery.celery_app.conf.beat_schedule) == {"cfg"}  # no entry added
    assert celery.task.tick.delay().result(timeout=5) == "tick"  # still a task


def _services_app(monkeypatch, tmp_path, **config):
    import json

    monkeypatch.delenv("FLASK_APP", raising=False)
    monkeypatch.delenv("FLASK_EXECUTE_APP", raising=False)
    monkeypatch.setenv("SVC_QUEUE", f"blk-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("SVC_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("SVC_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setenv("SVC_CONFIG", json.dumps(config))
    return services_app.create_app()


def test_blocking_services(monkeypatch, tmp_path, basic_app, basic_worker):
    app = _services_app(
        monkeypatch,
        tmp_path,
        CELERY_DISABLED_PLUGINS=["services"],
        CELERY_WORKERS=["blocked-worker"],
        CELERY_TASK_DEFAULT_QUEUE="basic",
        SECRET_KEY=basic_app.app.config["SECRET_KEY"],
    )
    celery = app.extensions["celery"]
    assert celery.state().supervisor is None
    with pytest.raises(ServiceError, match="'services' plugin is blocked"):
        celery.start()
    celery.stop()  # nothing to stop
    assert celery.processes == {} and celery.logs == {}

    # status() still pings: the session worker answers (once its remote control is up);
    # the configured worker is not listed OFFLINE: nothing is local with services blocked
    def answered():
        found = celery.status(timeout=0.5)
        return found if "OK" in found.values() else None

    status = helpers.wait_for(answered, timeout=15, message="the session worker answers")
    assert f"blocked-worker@{socket.gethostname()}" not in status
    # no local worker starts by itself: the session's worker on "basic" runs it
    assert celery.submit(basic_app.add, 2, 3).result(timeout=10) == 5
    assert celery.processes == {}


def test_blocking_workers(monkeypatch, tmp_path):
    app = _services_app(
        monkeypatch, tmp_path, CELERY_DISABLED_PLUGINS=["workers"], CELERY_FLOWER=True
    )
    kinds = [s.kind for s in app.extensions["celery"].state().supervisor.describe()]
    assert kinds == ["flower"]


def test_blocking_flower(monkeypatch, tmp_path):
    app = _services_app(
        monkeypatch, tmp_path, CELERY_DISABLED_PLUGINS=["flower"], CELERY_FLOWER=True
    )
    described = app.extensions["celery"].state().supervisor.describe()
    assert [s.kind for s in described] == ["worker"]
    assert "--task-events" not in described[0].argv
    shown = _services_app(monkeypatch, tmp_path, CELERY_FLOWER=True)
    described = shown.extensions["celery"].state().supervisor.describe()
    assert sorted(s.kind for s in described) == ["flower", "worker"]
    assert "--task-events" in next(s for s in described if s.kind == "worker").argv


def test_blocking_beat(monkeypatch, tmp_path):
    app = _services_app(
        monkeypatch,
        tmp_path,
        CELERY_DISABLED_PLUGINS=["beat"],
        CELERYBEAT_SCHEDULE={"cfg": {"task": "t", "schedule": 5}},
    )
    celery = app.extensions["celery"]
    assert [s.kind for s in celery.state().supervisor.describe()] == ["worker"]
    assert celery.celery_app.conf.beat_scheduler == "celery.beat:PersistentScheduler"
    with_beat = _services_app(
        monkeypatch, tmp_path, CELERYBEAT_SCHEDULE={"cfg": {"task": "t", "schedule": 5}}
    )
    kinds = sorted(s.kind for s in with_beat.extensions["celery"].state().supervisor.describe())
    assert kinds == ["beat", "worker"]


def test_a_blocked_plugins_keys_are_ignored_by_name_not_as_unknown(caplog):
    app = app_blocking("services", "flower", CELERY_START_TIMEOUT=3, CELERY_FLOWER_PORT=1)
    with caplog.at_level(logging.INFO, logger="flask_execute"):
        celery = Celery(app)
    assert "Ignoring CELERY_START_TIMEOUT: its plugin 'services' is disabled" in caplog.text
    assert "Ignoring CELERY_FLOWER_PORT: its plugin 'flower' is disabled" in caplog.text
    assert "unknown Celery setting" not in caplog.text
    conf = celery.celery_app.conf
    assert "start_timeout" not in conf and "flower_port" not in conf
