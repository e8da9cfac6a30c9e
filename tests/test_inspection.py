"""celery.inspect / celery.control: Celery's control API in-process, against a real worker."""

from __future__ import annotations

import psutil
import pytest

from flask_execute.inspection import Control, Inspect, commands
from tests import helpers

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def worker(basic_app, basic_worker):
    """Name of the session worker (``basic@<host>``)."""
    replies = basic_app.celery.inspect.ping(timeout=5)
    names = [name for name in replies if name.startswith("basic@")]
    assert names, replies
    return names[0]


def test_proxies_are_typed_objects(basic_app):
    assert isinstance(basic_app.celery.inspect, Inspect)
    assert isinstance(basic_app.celery.control, Control)
    assert basic_app.celery.inspect.celery_app is basic_app.celery.celery_app
    assert {"ping", "stats", "active", "registered"} <= set(commands("inspect"))
    assert {"shutdown", "pool_grow", "autoscale", "heartbeat"} <= set(commands("control"))
    assert "clock" in dir(basic_app.celery.inspect)


def test_unknown_command_names_the_valid_ones(basic_app):
    with pytest.raises(AttributeError, match=r"no command 'pingg'.*valid commands: .*ping"):
        basic_app.celery.inspect.pingg()
    with pytest.raises(AttributeError, match=r"no command 'stop'.*shutdown"):
        basic_app.celery.control.stop()
    # an inspect command is not a control command
    with pytest.raises(AttributeError, match="control has no command 'stats'"):
        basic_app.celery.control.stats()


def test_ping_is_keyed_by_worker_name(basic_app, worker):
    assert basic_app.celery.inspect.ping(destination=[worker]) == {worker: {"ok": "pong"}}
    # a single name, or a comma-separated string, work too
    assert list(basic_app.celery.inspect.ping(destination=worker)) == [worker]
    assert basic_app.celery.inspect.ping(
        destination=f" {worker}, nobody@nowhere,", timeout=0.5
    ) == {worker: {"ok": "pong"}}


def test_nobody_answering_is_an_empty_dict(basic_app, basic_worker):
    assert basic_app.celery.inspect.ping(destination=["nobody@nowhere"], timeout=0.2) == {}
    assert basic_app.celery.control.heartbeat(destination="nobody@nowhere", timeout=0.2) == {}


def test_inspect_commands(basic_app, worker):
    inspect = basic_app.celery.inspect
    for name in ("active", "scheduled", "reserved", "revoked", "active_queues"):
        replies = getattr(inspect, name)(destination=[worker], timeout=5)
        assert list(replies) == [worker], name
    assert "flask_execute.run" in inspect.registered(destination=[worker])[worker]
    queues = inspect.active_queues(destination=[worker])[worker]
    assert [q["name"] for q in queues] == ["basic"]
    stats = inspect.stats(destination=[worker])[worker]
    assert stats["pool"]["max-concurrency"] == 2
    # commands without a typed method are reached by name
    assert "clock" in inspect.clock(destination=[worker])[worker]
    assert inspect.conf(destination=[worker])[worker]["task_default_queue"] == "basic"


def test_a_submitted_task_shows_up_in_active(basic_app, worker):
    with basic_app.app.app_context():
        future = basic_app.celery.submit(basic_app.sleep, 1.5)
        try:

            def running():
                tasks = basic_app.celery.inspect.active(destination=[worker])[worker]
                return [t for t in tasks if t["id"] == future.id]

            helpers.wait_for(running, timeout=10, message="task in inspect.active")
            found = basic_app.celery.inspect.query_task(future.id, destination=[worker])
            assert found[worker][future.id][0] == "active"
        finally:
            assert future.result(timeout=10) == 1.5


def test_pool_grow_and_shrink_change_the_pool(basic_app, basic_worker, worker):
    celery = basic_app.celery

    def children() -> int:
        return len(psutil.Process(basic_worker.pid).children())

    def concurrency() -> int:
        # "max-concurrency" is the configured -c; "processes" is the live pool
        return len(celery.inspect.stats(destination=[worker])[worker]["pool"]["processes"])

    assert concurrency() == 2
    reply = celery.control.pool_grow(1, destination=[worker], timeout=5)
    try:
        assert list(reply) == [worker]
        assert "ok" in reply[worker], reply
        helpers.wait_for(lambda: concurrency() == 3, timeout=10, message="pool of 3")
        helpers.wait_for(lambda: children() == 3, timeout=10, message="3 pool processes")
    finally:
        reply = celery.control.pool_shrink(1, destination=[worker], timeout=5)
    assert "ok" in reply[worker], reply
    helpers.wait_for(lambda: concurrency() == 2, timeout=10, message="pool of 2")


def test_control_commands_reply_per_worker(basic_app, worker):
    control = basic_app.celery.control
    # the worker answers heartbeat with no payload: the key says who did
    assert control.heartbeat(destination=[worker]) == {worker: None}
    assert "ok" in control.enable_events(destination=[worker])[worker]
    assert "ok" in control.disable_events(destination=[worker])[worker]
    reply = control.rate_limit("flask_execute.run", "1000/s", destination=[worker])
    try:
        assert "ok" in reply[worker], reply
        registered = basic_app.celery.inspect.registered("rate_limit", destination=[worker])
        assert "flask_execute.run [rate_limit=1000/s]" in registered[worker]
    finally:
        control.rate_limit("flask_execute.run", None, destination=[worker])
    # pool restarts are off unless worker_pool_restarts is set: the worker says so
    assert "error" in control.pool_restart(destination=[worker])[worker]


def test_celery_client_methods_take_their_own_arguments(basic_app, worker):
    # any method of Celery's Inspect/Control is a command, with Celery's arguments
    control, inspect = basic_app.celery.control, basic_app.celery.inspect

    def limits() -> str:
        names = inspect.registered("soft_time_limit", "time_limit", destination=[worker])
        return next(n for n in names[worker] if n.startswith("flask_execute.run"))

    assert limits() == "flask_execute.run"
    reply = control.time_limit("flask_execute.run", soft=60, hard=120, destination=[worker])
    try:
        assert "ok" in reply[worker], reply
        assert limits() == "flask_execute.run [soft_time_limit=60 time_limit=120]"
    finally:
        control.time_limit("flask_execute.run", None, None, destination=[worker])
    assert limits() == "flask_execute.run"
    assert list(inspect.memsample(destination=worker)) == [worker]
    # query_task takes ids, or a list of them, as in Celery
    assert inspect.query_task(["cafe-0000-none"], destination=[worker]) == {worker: {}}


def test_a_projects_own_commands_are_reached_by_name(basic_app, worker):
    assert "echo_word" in commands("control")
    assert "count_names" in commands("inspect")
    control, inspect = basic_app.celery.control, basic_app.celery.inspect
    assert "echo_word" in dir(control)
    # positional arguments are named after the command's registration
    assert control.echo_word("ab", 2, destination=worker) == {worker: {"ok": "abab"}}
    assert control.echo_word(word="x", destination=[worker]) == {worker: {"ok": "x"}}
    assert inspect.count_names("a", "b", "c", destination=[worker]) == {worker: {"count": 3}}
    with pytest.raises(TypeError, match=r"echo_word\(\) takes at most 2 arguments"):
        control.echo_word("a", 1, "extra", destination=[worker])
    assert control.echo_word("x", destination=["nobody@nowhere"], timeout=0.2) == {}


def test_revoke_is_remembered(basic_app, worker):
    control = basic_app.celery.control
    reply = control.revoke("cafe-0000-not-a-task", destination=[worker])
    assert "ok" in reply[worker], reply
    assert "cafe-0000-not-a-task" in basic_app.celery.inspect.revoked(destination=[worker])[worker]


def test_shutdown_stops_only_the_named_worker(basic_app, basic_worker, worker, tmp_path):
    log = tmp_path / "worker.log"
    proc = helpers.start_worker(
        "tests.apps.cli_app:app",
        basic_app.app.config["CELERY_BROKER_URL"],
        log,
        name="cli-shutdown@%h",
        concurrency=1,
        queues="cli-shutdown",
    )
    try:
        helpers.wait_worker_ready(
            basic_app.celery.celery_app, proc, log, name_prefix="cli-shutdown@"
        )
        name = next(n for n in basic_app.celery.inspect.ping() if n.startswith("cli-shutdown@"))
        assert basic_app.celery.control.shutdown(destination=[name], timeout=5) == {
            name: {"ok": "shutdown requested"}
        }
        assert proc.wait(timeout=30) == 0, log.read_text()
        # the session worker was not touched
        assert list(basic_app.celery.inspect.ping(destination=[worker])) == [worker]
    finally:
        helpers.stop_process_tree(proc)
