"""``@celery.schedule`` and the locked beat: entries, decoration errors, real beats."""

from __future__ import annotations

import json
import os
import shelve
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery import schedules
from flask import Flask

from flask_execute import Celery, ConfigurationError, hookimpl
from flask_execute.beat import (
    FileBeatLock,
    LockedScheduler,
    RedisBeatLock,
    lock_key,
    make_lock,
    schedule_filename,
)
from tests import helpers
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(90)

SCHED_APP = "tests.apps.sched_app:app"
EVERY_SECOND = "tests.apps.sched_app.every_second"


#: The apps made here: the extension holds its apps weakly, and a test that passes one
#: straight to ``Celery(...)`` must not see it collected half-way.
_APPS = []


def _app(**config):
    app = Flask(f"sched_{uuid.uuid4().hex[:6]}")
    app.config.update(
        {"SECRET_KEY": "test-secret-key-of-32-bytes-or-more", "CELERY_ALWAYS_EAGER": True, **config}
    )
    _APPS.append(app)
    return app


def _beat_schedule(celery):
    return celery.celery_app.conf.beat_schedule


# -- entries in beat_schedule ------------------------------------------------------------


def test_every_form_of_the_guide_becomes_an_entry():
    app = _app()
    celery = Celery(app)

    @celery.schedule(hour=0, minute=0, name="scheduled-task-to-run-at-midnight")
    def scheduled_task():
        return None

    @celery.schedule(30, args=(1, 2), kwargs=dict(arg3="foo"))
    def task_to_run_every_30_seconds(arg1, arg2, arg3="test"):
        return arg1

    @celery.schedule(hour=7, minute=30, day_of_week=1)
    def task_to_run_every_monday_morning():
        return None

    @celery.schedule(timedelta(minutes=5), name="delta", options={"queue": "q"})
    def every_five_minutes():
        return None

    entries = _beat_schedule(celery)
    midnight = entries["scheduled-task-to-run-at-midnight"]
    assert midnight["task"] == f"{__name__}.scheduled_task"
    assert midnight["schedule"] == schedules.crontab(hour=0, minute=0)
    thirty = entries[
        f"{__name__}.test_every_form_of_the_guide_becomes_an_entry.<locals>.task_to_run_every_30_seconds"
    ]
    assert thirty["schedule"] == schedules.schedule(timedelta(seconds=30))
    assert thirty["args"] == (1, 2) and thirty["kwargs"] == {"arg3": "foo"}
    monday = next(e for e in entries.values() if e["task"].endswith("monday_morning"))
    assert monday["schedule"].hour == {7} and monday["schedule"].minute == {30}
    assert monday["schedule"].day_of_week == {1}
    assert entries["delta"]["schedule"].run_every == timedelta(minutes=5)
    assert entries["delta"]["options"] == {"queue": "q"}
    # the decorated function is a registered task, found back through celery.schedule
    assert celery.schedule.scheduled_task is scheduled_task
    assert celery.schedule["delta"] is every_five_minutes is celery.task.every_five_minutes
    assert scheduled_task() is None and task_to_run_every_30_seconds(1, 2) == 1
    assert every_five_minutes.delay().result() is None


def test_schedule_objects_pass_through():
    app = _app()
    celery = Celery(app)

    class Every(schedules.BaseSchedule):
        def is_due(self, last_run_at):
            return schedules.schedstate(False, 60.0)

    custom = Every()

    @celery.schedule(schedules.crontab(minute="*/15"), name="quarter")
    def quarter():
        return None

    @celery.schedule(custom, name="custom")
    def by_custom():
        return None

    assert _beat_schedule(celery)["quarter"]["schedule"] == schedules.crontab(minute="*/15")
    assert _beat_schedule(celery)["custom"]["schedule"] is custom


def test_solar_schedule_of_the_guide():
    pytest.importorskip("ephem", reason="solar schedules need celery[solar] (ephem)")
    app = _app()
    celery = Celery(app)

    @celery.schedule(schedules.solar("sunset", -37.81753, 144.96715), name="solar-task")
    def task_to_run_every_sunset():
        return None

    assert isinstance(_beat_schedule(celery)["solar-task"]["schedule"], schedules.solar)


def test_entries_merge_with_the_config_and_follow_later_decorations():
    config = {
        "from-config": {"task": "elsewhere.task", "schedule": 10.0},
        "replaced": {"task": "elsewhere.old", "schedule": 10.0},
    }
    celery = Celery()

    @celery.schedule(5, name="early")
    def early():
        return None

    app = _app(CELERYBEAT_SCHEDULE=config)
    celery.init_app(app)  # factory pattern: declared before init_app
    assert set(_beat_schedule(celery)) == {"from-config", "replaced", "early"}

    @celery.schedule(7, name="replaced")
    def late():
        return None

    entries = _beat_schedule(celery)
    assert set(entries) == {"from-config", "replaced", "early"}
    assert entries["replaced"]["task"] == f"{__name__}.late"
    assert entries["from-config"] == config["from-config"]


def test_new_style_beat_schedule_key_merges_too():
    app = _app(CELERY_BEAT_SCHEDULE={"cfg": {"task": "x", "schedule": 1.0}})
    celery = Celery(app)

    @celery.schedule(2)
    def mine():
        return None

    assert "cfg" in _beat_schedule(celery) and len(_beat_schedule(celery)) == 2


def test_a_plugin_contributes_entries_and_schedule_conversions():
    class Plugin:
        @hookimpl
        def flask_execute_add_beat_entries(self, app):
            return {"plugin-entry": {"task": "plugin.task", "schedule": 60.0}}

        @hookimpl
        def flask_execute_make_schedule(self, app, schedule, crontab_kwargs):
            if schedule == "hourly":
                return schedules.crontab(minute=0)
            return None

    celery = Celery(_app(), plugins=[Plugin()])

    @celery.schedule("hourly", name="hourly")
    def hourly():
        return None

    entries = _beat_schedule(celery)
    assert entries["plugin-entry"]["task"] == "plugin.task"
    assert entries["hourly"]["schedule"] == schedules.crontab(minute=0)


def test_blocking_the_scheduling_plugin_leaves_beat_schedule_alone():
    celery = Celery(_app(CELERY_DISABLED_PLUGINS=["scheduling"]))

    @celery.schedule(5)
    def ignored():
        return None

    assert not _beat_schedule(celery)


# -- decoration-time errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((schedules.crontab(hour=1),), {"hour": 2}, "crontab keywords.*give one"),
        ((), {}, "needs to know when to run"),
        ((), {"hours": 2}, "unknown keyword.*hours.*minute, hour"),
        ((), {"minute": 99}, "invalid crontab"),
        ((0,), {}, "positive interval"),
        ((timedelta(seconds=-1),), {}, "positive interval"),
        ((True,), {}, "cannot run on True"),
        ((5,), {"args": "ab"}, "args=.*list or tuple"),
        ((5,), {"kwargs": [1]}, "kwargs=.*dict"),
        ((5,), {"name": ""}, "name=.*string"),
    ],
)
def test_bad_schedules_fail_at_decoration_time_before_any_app(args, kwargs, match):
    celery = Celery()  # no application yet: the error still comes at once
    with pytest.raises(ConfigurationError, match=match):
        celery.schedule(*args, **kwargs)


def test_unknown_schedule_types_fail_at_decoration_on_a_registered_app():
    app = _app()
    celery = Celery(app)
    with pytest.raises(ConfigurationError, match="cannot run on 'daily'"):

        @celery.schedule("daily")
        def daily():
            return None

    assert "tests.test_schedule.daily" not in _beat_schedule(celery)
    assert not list(celery.schedule)


def test_bare_decorator_and_duplicate_names_are_errors():
    app = _app()
    celery = Celery(app)
    with pytest.raises(ConfigurationError, match=r"not a bare @celery\.schedule"):

        @celery.schedule
        def bare():
            return None

    with pytest.raises(ConfigurationError, match=r"not a bare @celery\.schedule"):

        @celery.schedule
        @celery.task
        def bare_task():
            return None

    unbound = Celery()  # no application yet: still a clear error, not a lookup
    with pytest.raises(ConfigurationError, match=r"not a bare @celery\.schedule"):

        @unbound.schedule
        @unbound.task
        def bare_unbound():
            return None

    @celery.schedule(5, name="dup")
    def first():
        return None

    with pytest.raises(ConfigurationError, match="named 'dup'"):

        @celery.schedule(6, name="dup")
        def second():
            return None

    with pytest.raises(AttributeError, match="missing"):
        celery.schedule.missing  # noqa: B018
    with pytest.raises(KeyError, match="missing"):
        celery.schedule["missing"]
    assert "dup" in celery.schedule and list(celery.schedule) == ["dup"]


def test_lock_config_is_validated():
    with pytest.raises(ConfigurationError, match="CELERY_BEAT_LOCK_TIMEOUT"):
        Celery(_app(CELERY_BEAT_LOCK_TIMEOUT=0))
    with pytest.raises(ConfigurationError, match="CELERY_BEAT_LOCK_KEY"):
        Celery(_app(CELERY_BEAT_LOCK_KEY=5))


# -- the locks -------------------------------------------------------------------------


def test_file_lock_is_exclusive_until_released(tmp_path):
    first, second = FileBeatLock(str(tmp_path / "s.lock")), FileBeatLock(str(tmp_path / "s.lock"))
    assert first.acquire() and first.renew()
    assert not second.acquire() and not second.renew()
    first.release()
    assert second.acquire()
    second.release()


def test_non_redis_broker_uses_a_file_lock(tmp_path):
    app = _app(CELERY_BROKER_URL="filesystem://")
    celery = Celery(app)
    lock = make_lock(celery.celery_app, str(tmp_path / "schedule"))
    assert isinstance(lock, FileBeatLock) and lock.path == str(tmp_path / "schedule.lock")


def test_redis_lock_expires_and_a_lost_lock_is_noticed(broker_url):
    key = f"test-lock:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(broker_url)
    first, second = RedisBeatLock(broker_url, key, 5), RedisBeatLock(broker_url, key, 5)
    try:
        assert first.acquire() and not second.acquire()
        assert client.get(key).decode() == first.token and client.pttl(key) > 0
        client.delete(key)  # as if it expired while the holder stalled
        assert second.acquire()
        assert not first.renew()  # the stalled holder must stop sending
        assert second.renew()
        second.release()
        assert client.get(key) is None
    finally:
        client.delete(key)


def test_a_waiting_scheduler_sends_nothing_and_never_opens_its_file(broker_url, tmp_path):
    key = f"test-lock:{uuid.uuid4().hex}"
    app = _app(
        CELERY_ALWAYS_EAGER=False,
        CELERY_BROKER_URL=broker_url,
        CELERY_BEAT_LOCK_KEY=key,
        CELERY_BEAT_LOCK_TIMEOUT=3,
    )
    celery = Celery(app)
    assert lock_key(celery.celery_app) == key
    other = RedisBeatLock(broker_url, key, 5)
    assert other.acquire()
    file = tmp_path / "beat" / "schedule"
    scheduler = LockedScheduler(app=celery.celery_app, schedule_filename=str(file))
    try:
        assert scheduler.tick() == 1.0  # a third of the lock timeout
        assert not scheduler.holding and scheduler.schedule == {}
        assert not list(file.parent.glob("schedule*"))
        other.release()
        scheduler.tick()
        assert scheduler.holding and list(file.parent.glob("schedule*"))
    finally:
        scheduler.close()
        other.release()
    assert redis.Redis.from_url(broker_url).get(key) is None
    # beat's banner builds a lazy instance: it neither locks nor schedules
    lazy = LockedScheduler(app=celery.celery_app, schedule_filename=str(file), lazy=True)
    assert lazy.tick() == 1.0 and not lazy.holding


def test_schedule_file_goes_to_the_log_folder(tmp_path):
    app = _app(CELERY_LOG_DIR=str(tmp_path))
    state = Celery(app).state()
    assert schedule_filename(state) == str(tmp_path / f"celerybeat-schedule-{app.name}")
    plain = _app()
    state = Celery(plain).state()
    folder = Path(plain.instance_path) / "celery"
    assert schedule_filename(state) == str(folder / f"celerybeat-schedule-{plain.name}")


# -- real beats ------------------------------------------------------------------------


def _queue_messages(client, queue):
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


# sched_app's crontab entries fire at their wall-clock times (every quarter hour for
# one), so a test that happens to cross one sees their messages too: count and check
# the one-second entry's messages only
CRONTAB_TASKS = {"tests.apps.sched_app.quarterly", "tests.apps.sched_app.monday_morning"}


def _every_second_sent(client, queue):
    return sum(m["headers"]["task"] == EVERY_SECOND for m in _queue_messages(client, queue))


def _only_every_second(messages):
    tasks = {m["headers"]["task"] for m in messages}
    return EVERY_SECOND in tasks and tasks <= {EVERY_SECOND, *CRONTAB_TASKS}


@pytest.fixture
def beat_env(tmp_path):
    """Per-test queue, lock key and log folder for tests.apps.sched_app."""
    return {
        "SCHED_APP_QUEUE": f"sched-{uuid.uuid4().hex[:8]}",
        "SCHED_APP_LOCK_KEY": f"flask_execute:test-beat-lock:{uuid.uuid4().hex[:8]}",
        "SCHED_APP_LOCK_TIMEOUT": "3",
        "SCHED_APP_LOG_DIR": str(tmp_path / "logs"),
    }


@pytest.fixture
def client(broker_url):
    return redis.Redis.from_url(broker_url)


@pytest.fixture
def beats():
    started = []
    yield started
    for proc in started:
        helpers.stop_process_tree(proc)


def test_a_one_second_schedule_fires_once_a_second(broker_url, tmp_path, beat_env, client, beats):
    queue = beat_env["SCHED_APP_QUEUE"]
    log = tmp_path / "beat.log"
    beats.append(
        helpers.start_beat(
            SCHED_APP, broker_url, log, schedule_file=tmp_path / "sched", extra_env=beat_env
        )
    )
    sent = lambda: _every_second_sent(client, queue)
    wait_for(lambda: sent() >= 1, timeout=30, message=f"first message\n{log}")
    start, first = time.monotonic(), sent()
    wait_for(lambda: sent() >= first + 4, timeout=20, message="four more messages")
    elapsed = time.monotonic() - start
    # four more sends of a 1-second entry cannot take less than three seconds
    assert elapsed >= 2.9, f"{first + 4} messages after {elapsed:.2f}s: sent too often"
    messages = _queue_messages(client, queue)
    assert _only_every_second(messages)
    ticks = [m for m in messages if m["headers"]["task"] == EVERY_SECOND]
    assert {m["headers"]["argsrepr"] for m in ticks} == {"['tick']"}


def test_crontab_entries_land_in_beats_schedule_file(broker_url, tmp_path, beat_env, client, beats):
    # no -s: the file goes to CELERY_LOG_DIR, named after the app
    log = tmp_path / "beat.log"
    proc = helpers.start_beat(SCHED_APP, broker_url, log, extra_env=beat_env)
    beats.append(proc)
    wait_for(lambda: "holding the lock" in log.read_text(), timeout=30, message=f"beat lock\n{log}")
    helpers.stop_process_tree(proc)
    assert client.get(beat_env["SCHED_APP_LOCK_KEY"]) is None  # released on a clean stop
    path = Path(beat_env["SCHED_APP_LOG_DIR"]) / "celerybeat-schedule-tests.apps.sched_app"
    with shelve.open(str(path), flag="r") as store:
        entries = dict(store["entries"])
    monday = entries["monday-morning"]
    assert monday.task == "tests.apps.sched_app.monday_morning"
    assert isinstance(monday.schedule, schedules.crontab)
    assert (monday.schedule.minute, monday.schedule.hour) == ({30}, {7})
    assert monday.schedule.day_of_week == {1}
    assert monday.schedule.day_of_month == set(range(1, 32))
    quarterly = entries["tests.apps.sched_app.quarterly"]
    assert quarterly.schedule.minute == {0, 15, 30, 45}
    assert quarterly.kwargs == {"where": "x"} and quarterly.options == {"expires": 60}
    assert entries["from-config"].schedule.run_every == timedelta(hours=1)
    assert entries["every-second"].args == ("tick",)


def test_two_beats_send_once_and_the_survivor_takes_over(
    broker_url, tmp_path, beat_env, client, beats
):
    queue, key = beat_env["SCHED_APP_QUEUE"], beat_env["SCHED_APP_LOCK_KEY"]
    # one schedule file for both, as two web processes on one host would start them
    logs = [tmp_path / "beat-a.log", tmp_path / "beat-b.log"]
    for log in logs:
        beats.append(
            helpers.start_beat(
                SCHED_APP, broker_url, log, schedule_file=tmp_path / "shared", extra_env=beat_env
            )
        )
    by_pid = dict(zip([p.pid for p in beats], logs, strict=True))

    def holder():
        value = client.get(key)
        return int(value.decode().split(":")[1]) if value else None

    sent = lambda: _every_second_sent(client, queue)
    wait_for(lambda: sent() >= 2, timeout=30, message="first messages")
    first_holder = holder()
    assert first_holder in by_pid
    start, first = time.monotonic(), sent()
    wait_for(lambda: sent() >= first + 4, timeout=20, message="four more messages")
    elapsed = time.monotonic() - start
    assert elapsed >= 2.9, f"4 messages in {elapsed:.2f}s: both beats sent the entry"
    (waiting,) = [pid for pid in by_pid if pid != first_holder]
    assert "Sending due task" not in by_pid[waiting].read_text()
    assert "Sending due task" in by_pid[first_holder].read_text()

    # kill the holder hard: its lock expires (3 s) and the other beat takes over
    os.kill(first_holder, signal.SIGKILL)
    next(p for p in beats if p.pid == first_holder).wait(timeout=10)
    wait_for(lambda: holder() == waiting, timeout=20, message="hand-over of the lock")
    before = sent()
    wait_for(lambda: sent() >= before + 2, timeout=20, message="sends after hand-over")
    assert "Sending due task" in by_pid[waiting].read_text()
    assert _only_every_second(_queue_messages(client, queue))
