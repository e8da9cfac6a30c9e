"""Each hook, exercised by a small plugin, as a plugin author would use it.

One test per hook, named ``test_hook_<hook name without the prefix>``: the contract
test in ``test_docs.py`` fails for a hook without one.
"""

from __future__ import annotations

import uuid
import zlib

import pytest
from celery import schedules
from flask import Blueprint, Flask

from flask_execute import Celery, ConfigurationError, Future, FuturePool, ServiceError, hookimpl
from flask_execute.runtime import AppState
from flask_execute.services import Service
from flask_execute.testing import plugin_registered
from tests import helpers
from tests.apps import services_app


def eager_app(**config):
    app = Flask(__name__)
    app.config.update(CELERY_ALWAYS_EAGER=True, **config)
    return app


# -- configuration ---------------------------------------------------------------------


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
    def flask_execute_init_app(self, app):
        app.config["INITIALISED_WITH"] = AppState.of(app).celery_app.main


def test_hook_add_config_keys():
    app = eager_app()
    celery = Celery(app, plugins=[ConfigPlugin()])
    assert app.config["CELERY_GREETING"] == "hello"  # declared key gets its default
    assert "greeting" not in celery.celery_app.conf  # declared keys are not forwarded
    given = eager_app(CELERY_GREETING="hi")
    Celery(given, plugins=[ConfigPlugin()])
    assert given.config["CELERY_GREETING"] == "hi"


def test_hook_validate_config():
    with pytest.raises(ConfigurationError, match="CELERY_GREETING"):
        Celery(eager_app(CELERY_GREETING=3), plugins=[ConfigPlugin()])


def test_hook_configure_celery():
    app = eager_app(CELERY_WORKER_PREFETCH_MULTIPLIER=2, CELERY_TASK_DEFAULT_QUEUE="user")
    conf = Celery(app, plugins=[ConfigPlugin()]).celery_app.conf
    assert conf.task_default_queue == "user"  # setdefault yields to the user
    assert conf.worker_prefetch_multiplier == 7  # assignment overrides


def test_hook_init_app():
    app = eager_app()
    Celery(app, plugins=[ConfigPlugin()])
    assert app.config["INITIALISED_WITH"] == __name__

    class Refuses:
        @hookimpl
        def flask_execute_init_app(self, app):
            raise ConfigurationError("not this app")

    refused = eager_app()
    celery = Celery(plugins=[Refuses()])
    with pytest.raises(ConfigurationError, match="not this app"):
        celery.init_app(refused)
    assert "flask_execute" not in refused.extensions  # nothing half-registered
    with pytest.raises(RuntimeError, match="no application registered"):
        celery.state()


# -- serialization ---------------------------------------------------------------------


class Compressed:
    """Wraps the default serializer (the docs' example of extending a default)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = f"zlib+{inner.name}"

    def dumps(self, obj):
        return zlib.compress(self.inner.dumps(obj))

    def loads(self, data):
        return self.inner.loads(zlib.decompress(data))


def test_hook_make_serializer():
    class Plugin:
        @hookimpl(wrapper=True)
        def flask_execute_make_serializer(self, app):
            return Compressed((yield))

    celery = Celery(eager_app(), plugins=[Plugin()])
    assert celery.state().wire.serializer.name == "zlib+cloudpickle"
    assert celery.submit(lambda x: x * 2, 21).result(timeout=5) == 42


# -- task execution --------------------------------------------------------------------


class SendSpy:
    def __init__(self):
        self.prepared = 0
        self.sent = []

    @hookimpl
    def flask_execute_prepare_send(self, app):
        self.prepared += 1

    @hookimpl(wrapper=True)
    def flask_execute_send(self, app, messages):
        self.sent.extend(m.name for m in messages)
        return (yield)


def test_hook_send():
    spy = SendSpy()
    celery = Celery(eager_app(), plugins=[spy])
    assert celery.map(pow, [2, 2], [3, 2]).result() == [4, 9]
    assert spy.sent == ["builtins.pow", "builtins.pow"]
    assert spy.prepared == 0  # eager mode prepares nothing


def test_hook_prepare_send(basic_app, basic_worker):
    spy = SendSpy()
    state = basic_app.celery.state()
    with plugin_registered(basic_app.app, spy):
        state.reset_prepared()
        basic_app.celery.submit(basic_app.add, 1, 2).result(timeout=10)
        basic_app.celery.map(basic_app.add, [1, 1], [2, 2]).result(timeout=10)
    assert spy.prepared == 1
    assert spy.sent == ["tests.apps.basic.add"] * 3


class KeepAfter:
    """Answers flask_execute_send_after first: keeps the messages, sends nothing."""

    def __init__(self):
        self.kept = []

    @hookimpl(tryfirst=True)
    def flask_execute_send_after(self, app, messages):
        self.kept += messages
        return [m.make_future(app, AppState.of(app).pm) for m in messages]


def test_hook_send_after(basic_app, basic_worker):
    spy = KeepAfter()
    celery = basic_app.celery
    first = celery.submit(basic_app.add, 1, 2)
    with plugin_registered(basic_app.app, spy):
        second = celery.submit(basic_app.add, first, 3)
        plain = celery.submit(basic_app.add, 1, 1)
    assert [m.after for m in spy.kept] == [(first.id,)]
    assert spy.kept[0].task_id == second.id and spy.kept[0].kwargs == {"after": [first.id]}
    assert plain.result(timeout=10) == 2 and not second.done()  # kept, never sent


class Upper:
    @hookimpl(wrapper=True)
    def flask_execute_run_task(self, app, task, run):
        assert app.name == __name__ and task.name == "flask_execute.run"
        result = yield
        return result.upper() if isinstance(result, str) else result


def test_hook_run_task():
    celery = Celery(eager_app(), plugins=[Upper()])
    assert celery.submit(str.lower, "Hello").result(timeout=5) == "HELLO"


# -- futures ---------------------------------------------------------------------------


class TaggedFuture(Future):
    tag = "custom"


class FuturesPlugin:
    @hookimpl
    def flask_execute_make_future(self, app, task_id, name):
        return TaggedFuture(task_id, AppState.of(app).futures, name)

    @hookimpl
    def flask_execute_make_pool(self, app, futures):
        pool = FuturePool(futures)
        pool.tag = "custom-pool"
        return pool


def test_hook_make_future():
    celery = Celery(eager_app(), plugins=[FuturesPlugin()])
    future = celery.submit(pow, 2, 5)
    assert isinstance(future, TaggedFuture) and future.result() == 32


def test_hook_make_pool():
    celery = Celery(eager_app(), plugins=[FuturesPlugin()])
    pool = celery.map(pow, [2, 2], [3, 2])
    assert pool.tag == "custom-pool" and pool.result() == [4, 9]


class BlueprintPlugin:
    @hookimpl
    def flask_execute_make_blueprint(self, app, name, authorize):
        blueprint = Blueprint(name, __name__)
        blueprint.add_url_rule("/<token>", "status", lambda token: {"mine": token})
        return blueprint


def test_hook_make_blueprint():
    app = eager_app(SECRET_KEY="test-secret-key-of-32-bytes-or-more")
    celery = Celery(app, plugins=[BlueprintPlugin()])
    app.register_blueprint(celery.blueprint("mine"), url_prefix="/tasks")
    assert app.test_client().get("/tasks/x").get_json() == {"mine": "x"}


class CancelSpy:
    """Answers every cancel itself: nothing reaches the workers or the backend."""

    def __init__(self):
        self.cancelled = []

    @hookimpl
    def flask_execute_cancel_task(self, app, task_id):
        self.cancelled.append((app.name, task_id))
        return True


def test_hook_cancel_task(basic_app, basic_worker):
    import redis

    spy, queue = CancelSpy(), f"nobody-serves-{uuid.uuid4().hex[:8]}"
    celery = basic_app.celery
    backend = celery.celery_app.backend
    future = celery.submit(basic_app.add, 1, 2, queue=queue)
    try:
        with plugin_registered(basic_app.app, spy):
            assert future.cancel() is True
        assert spy.cancelled == [(basic_app.app.name, future.id)] and future.cancelled()
        # the default (the cancel plugin) would have marked it; the spy answered first
        assert backend.get(backend.get_key_for_task(future.id, key="-cancelled")) is None
    finally:
        celery.state().futures.withdraw(future.id)  # no worker will ever answer for it
        redis.Redis.from_url(celery.celery_app.conf.broker_url).delete(queue)


class RecordingSource:
    """A result source that resolves nothing by itself."""

    def __init__(self, state):
        self.state = state
        self.watched = []

    def start(self):
        pass

    def stop(self):
        pass

    def submitted(self, task_id, name):
        self.watched.append(task_id)

    def withdrawn(self, task_id):
        self.watched.remove(task_id)

    def watch(self, task_id):
        self.watched.append(task_id)

    def lookup(self, task_id):
        return None

    def is_listener_thread(self):
        return False


def test_hook_make_result_source(basic_app, basic_worker):
    class Plugin:
        source = None

        @hookimpl
        def flask_execute_make_result_source(self, app):
            Plugin.source = RecordingSource(AppState.of(app))
            return Plugin.source

    app = Flask("source-app")
    app.config.update(
        CELERY_BROKER_URL=basic_app.app.config["CELERY_BROKER_URL"],
        CELERY_TASK_DEFAULT_QUEUE="basic",
        CELERY_START_LOCAL_WORKERS=False,
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    )
    celery = Celery(app, plugins=[Plugin()])
    future = celery.submit(basic_app.add, 2, 3)
    assert Plugin.source.watched == [future.id]
    # our source feeds the future: deliver what the worker stored
    meta = helpers.wait_for(
        lambda: (
            (m := basic_app.celery.state().futures.source().lookup(future.id))
            and m["status"] == "SUCCESS"
            and m
        ),
        timeout=10,
        message="stored result",
    )
    celery.state().futures.deliver(future.id, meta)
    assert future.result(timeout=1) == 5


# -- local services --------------------------------------------------------------------


@pytest.fixture
def services(monkeypatch, tmp_path):
    """services_app with no worker of its own: each test's plugin describes one."""
    queue = f"hooks-{uuid.uuid4().hex[:8]}"
    monkeypatch.delenv("FLASK_APP", raising=False)
    monkeypatch.delenv("FLASK_EXECUTE_APP", raising=False)
    monkeypatch.setenv("SVC_QUEUE", queue)
    monkeypatch.setenv("SVC_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("SVC_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setenv("SVC_CONFIG", '{"CELERY_DISABLED_PLUGINS": ["workers"]}')
    app = services_app.create_app()
    try:
        yield app, queue
    finally:
        app.extensions["celery"].stop(timeout=10)


def solo_worker(queue: str) -> Service:
    name = f"hook{uuid.uuid4().hex[:6]}"
    argv = ["worker", f"--hostname={name}@%h", "--pool=solo", f"--queues={queue}"]
    return Service(name, "worker", argv, node=f"{name}@{__import__('socket').gethostname()}")


class Describes:
    def __init__(self, queue):
        self.service = solo_worker(queue)

    @hookimpl
    def flask_execute_describe_services(self, app):
        return [self.service]


@pytest.mark.timeout(60)
def test_hook_describe_services(services):
    app, queue = services
    celery = app.extensions["celery"]
    assert celery.logs == {}  # the workers plugin is blocked: nothing described
    plugin = Describes(queue)
    with plugin_registered(app, plugin):
        assert list(celery.logs) == [plugin.service.name]
        celery.start()
        assert list(celery.processes) == [plugin.service.name]
        assert celery.submit(services_app.add, 1, 2).result(timeout=30) == 3
        celery.stop()
    assert celery.processes == {}


@pytest.mark.timeout(60)
def test_hook_spawn_service(services):
    app, queue = services
    celery = app.extensions["celery"]
    spawned = []

    class Spy:
        @hookimpl(wrapper=True)
        def flask_execute_spawn_service(self, app, service):
            process = yield
            spawned.append((service.name, process.pid))
            return process

    plugin = Describes(queue)
    with plugin_registered(app, plugin), plugin_registered(app, Spy()):
        celery.start()
        assert spawned == [(plugin.service.name, celery.processes[plugin.service.name])]
        celery.stop()


@pytest.mark.timeout(60)
def test_hook_check_ready(services):
    app, queue = services
    celery = app.extensions["celery"]

    class NeverReady:
        @hookimpl
        def flask_execute_check_ready(self, app, service, process):
            return False

    plugin = Describes(queue)
    with plugin_registered(app, plugin), plugin_registered(app, NeverReady()):
        with pytest.raises(ServiceError, match="was not ready within 2s"):
            celery.start(timeout=2)
    assert celery.processes == {}  # nothing left running after the failure


@pytest.mark.timeout(60)
def test_hook_make_supervisor(services):
    app, _queue = services

    class Quiet:
        """A supervisor that runs nothing and says so."""

        started = 0

        def start(self, timeout=None):
            Quiet.started += 1

        def stop(self, timeout=None):
            pass

        def running(self):
            return {}

        def log_paths(self):
            return {"nothing": "/dev/null"}

    class Plugin:
        @hookimpl
        def flask_execute_make_supervisor(self, app):
            return Quiet()

    fresh = Flask("supervised")
    fresh.config.update(app.config)
    fresh.config["CELERY_DISABLED_PLUGINS"] = []
    celery = Celery(fresh, plugins=[Plugin()])
    celery.start()
    assert Quiet.started == 1 and celery.logs == {"nothing": "/dev/null"}


# -- scheduling ------------------------------------------------------------------------


def test_hook_make_schedule():
    class Plugin:
        @hookimpl
        def flask_execute_make_schedule(self, app, schedule, crontab_kwargs):
            return schedules.crontab(minute=0) if schedule == "hourly" else None

    celery = Celery(eager_app(), plugins=[Plugin()])

    @celery.schedule("hourly", name="hourly")
    def hourly():
        return None

    entry = celery.celery_app.conf.beat_schedule["hourly"]
    assert entry["schedule"] == schedules.crontab(minute=0)


def test_hook_add_beat_entries():
    class Plugin:
        @hookimpl
        def flask_execute_add_beat_entries(self, app):
            return {"plugin-entry": {"task": "plugin.task", "schedule": 60.0}}

    celery = Celery(eager_app(CELERYBEAT_SCHEDULE={"cfg": {"task": "x", "schedule": 5}}))
    with plugin_registered(celery.state().app, Plugin()):
        celery.schedule.refresh(celery.state())
        entries = celery.celery_app.conf.beat_schedule
    assert entries["plugin-entry"]["task"] == "plugin.task" and "cfg" in entries


# -- command line ----------------------------------------------------------------------


def test_hook_add_command_defaults():
    from flask_execute import cli

    class Plugin:
        @hookimpl
        def flask_execute_add_command_defaults(self, app):
            return {"worker": {"concurrency": 3, "loglevel": "error"}}

    app = eager_app(CELERY_LOG_LEVEL="debug")
    Celery(app, plugins=[Plugin()])
    worker = cli._celery_cli().commands["worker"]
    # later plugins win per option; the services plugin's other defaults stay
    assert cli._defaults(app, "worker", worker, []) == (
        {"loglevel": "error", "concurrency": 3},
        [],
    )
    assert cli._defaults(app, "beat", cli._celery_cli().commands["beat"], []) == (
        {"loglevel": "debug"},
        [],
    )


def test_an_app_collected_behind_the_extension_is_named_not_unregistered():
    import gc

    celery = Celery(Flask("collected"))  # no reference kept: the extension holds it weakly
    gc.collect()
    with pytest.raises(RuntimeError, match=r"garbage-collected.*keep a reference"):
        celery.state()
