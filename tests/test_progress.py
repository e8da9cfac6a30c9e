"""Progress: ``current_task.progress`` in real workers, ``future.progress``,
``pool.progress``, coalescing, and ``flask celery watch``."""

from __future__ import annotations

import os
import pty
import subprocess
import uuid

import pytest
import redis
from celery import states
from flask import Flask

from flask_execute import Celery, current_task
from flask_execute.futures import Future
from flask_execute.progress import PROGRESS, PoolProgress, Progress, ProgressReporter
from tests import helpers

pytestmark = pytest.mark.timeout(120)

FLASK = helpers.FLASK


def test_progress_reaches_the_future_with_every_paced_report(celery, m):
    future = celery.submit(m.report_progress, 4, file="a.csv")
    assert future.progress is None  # nothing reported yet
    seen: list[Progress] = []
    future.add_progress_callback(lambda f: seen.append(f.progress))
    # Callbacks run in order on one thread, and result() waits for the done callbacks
    # added before the end: so for the progress callbacks queued ahead of this one.
    future.add_done_callback(lambda: None)
    assert future.result(timeout=30) == 4
    assert [p.done for p in seen] == [1, 2, 3, 4]
    assert seen[1] == Progress(2, 4, {"file": "a.csv"}) and seen[1].fraction == 0.5
    # The last report is kept once the call is done, and Celery sees the same meta.
    assert future.progress == Progress(4, 4, {"file": "a.csv"})
    assert future.progress.as_dict() == {
        "done": 4,
        "total": 4,
        "fraction": 1.0,
        "meta": {"file": "a.csv"},
    }


def test_a_tight_loop_is_coalesced_and_its_last_report_arrives(celery, m):
    future = celery.submit(m.report_tight, 100_000)
    deliveries: list[Progress] = []
    future.add_progress_callback(lambda f: deliveries.append(f.progress))
    future.add_done_callback(lambda: None)  # result() waits for the callbacks before it
    assert future.result(timeout=60) == 100_000
    # Each delivery is one backend write (Redis publishes every stored state).
    assert 1 <= len(deliveries) < 1000, len(deliveries)
    assert future.progress == Progress(100_000, 100_000)
    assert deliveries[-1] == Progress(100_000, 100_000)


def test_progress_of_a_map_call_and_the_pool(celery, m):
    pool = celery.map(m.report_progress, [2], [3], pace=0.05)
    assert pool.progress == PoolProgress(0, 2, 0.0, None)
    assert pool.result(timeout=30) == [2, 3]
    assert [f.progress for f in pool] == [Progress(2, 2), Progress(3, 3)]
    assert pool.progress == PoolProgress(2, 2, 1.0, Progress(5, 5))


@pytest.mark.parametrize(
    ("done", "total", "error", "match"),
    [
        (-1, None, ValueError, "cannot be negative"),
        (1, 0, ValueError, r"total=0\) must be more than 0"),
        (5, 4, ValueError, "more than total=4"),
        ("1", None, TypeError, "must be a finite number"),
    ],
)
def test_bad_progress_fails_the_call_clearly(celery, m, done, total, error, match):
    with pytest.raises(error, match=match):
        celery.submit(m.bad_progress, done, total).result(timeout=30)


def test_progress_outside_a_task_is_a_clear_error():
    with pytest.raises(RuntimeError, match="only available while a task runs"):
        current_task.progress(1, 2)


# -- in-process: the reporter, the parsing, the aggregate ---------------------------------


def test_reporter_writes_at_once_holds_what_comes_too_soon_and_flushes_it():
    writes: list[dict] = []
    reporter = ProgressReporter(writes.append, interval=3600)
    for done in range(1, 1001):
        reporter.report({"done": done, "total": 1000})
    assert writes == [{"done": 1, "total": 1000}]  # the first at once, the rest held
    reporter.flush()
    assert writes[-1] == {"done": 1000, "total": 1000} and reporter.writes == 2
    reporter.flush()  # nothing held any more
    assert reporter.writes == 2
    every = ProgressReporter(writes.append, interval=0)
    for done in range(3):
        every.report({"done": done})
    assert every.writes == 3


def test_progress_parsing_accepts_hand_written_states_and_ignores_others():
    assert Progress.from_info({"done": 3, "step": "x"}) == Progress(3, None, {"step": "x"})
    assert Progress.from_info({"done": 3}).fraction is None
    for info in (None, {"step": 1}, {"done": "3"}, {"done": True}, {"done": 1, "total": "x"}):
        assert Progress.from_info(info) is None
    future = Future("hand-made")
    future.set_state(PROGRESS, {"done": 1, "total": 4})
    future.set_state(PROGRESS, {"step": "no numbers"})  # keeps the last real report
    future.set_state(states.STARTED, {"done": 9})  # not a progress state
    assert future.progress == Progress(1, 4) and future.info == {"done": 9}


def test_pool_progress_counts_finished_calls_and_running_fractions():
    half = Progress(1, 2)
    unknown = Progress(7)
    aggregate = PoolProgress.of([(True, None), (False, half), (False, unknown), (False, None)])
    assert aggregate.done == 1 and aggregate.total == 4
    assert aggregate.fraction == pytest.approx((1 + 0.5) / 4)
    assert aggregate.reported == Progress(8, None)  # one call gave no total
    assert PoolProgress.of([]).fraction == 1.0
    assert aggregate.as_dict()["reported"] == {
        "done": 8,
        "total": None,
        "fraction": None,
        "meta": {},
    }


def test_eager_progress_is_coalesced_the_same_way():
    app = Flask("eager-progress")
    app.config.update(
        CELERY_ALWAYS_EAGER=True,
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
        CELERY_PROGRESS_INTERVAL=3600,
    )
    celery = Celery(app)

    def loop():
        for done in (0, 1, 2, 3):
            current_task.progress(done, 3)
        return "ok"

    future = celery.submit(loop)
    assert future.result() == "ok"
    assert future.progress == Progress(3, 3)  # the held last report was flushed


@pytest.mark.parametrize("value", [-1, "0.1", True, 7200])
def test_a_bad_progress_interval_fails_init_app(value):
    app = Flask("bad-interval")
    app.config.update(
        CELERY_ALWAYS_EAGER=True,
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
        CELERY_PROGRESS_INTERVAL=value,
    )
    with pytest.raises(Exception, match="CELERY_PROGRESS_INTERVAL must be a number of seconds"):
        Celery(app)


# -- flask celery watch ---------------------------------------------------------------


@pytest.fixture
def client(broker_url):
    connection = redis.Redis.from_url(broker_url)
    yield connection
    connection.close()


def watch(task_id: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FLASK, "--app", "tests.apps.basic", "celery", "watch", task_id, *options],
        env=helpers.test_env(),
        cwd=helpers.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_watch_shows_progress_live_then_the_result(celery, m, client):
    key = f"release-{uuid.uuid4().hex}"
    future = celery.submit(m.report_until_released, key, 3)
    proc = watch(future.id)
    try:
        lines: list[str] = []
        while not lines or not lines[-1].startswith("3/4"):
            line = proc.stdout.readline()
            assert line, (lines, proc.stderr.read())
            lines.append(line.strip())
        # Still running: the watch shows the third report before the task can end.
        assert not future.done()
        client.rpush(key, "go")
        out, err = proc.communicate(timeout=60)
    finally:
        helpers.stop_process_tree(proc)
    lines += out.splitlines()
    assert lines[-2:] == ["4/4 100% stage=done", "SUCCESS 'released'"], (lines, err)
    assert "3/4 75% stage=working" in lines
    assert proc.returncode == 0


def test_watch_reports_a_failure_and_an_unknown_id(celery, m):
    future = celery.submit(m.fail, "broken")
    with pytest.raises(ValueError):
        future.result(timeout=30)
    proc = watch(future.id)
    out, err = proc.communicate(timeout=60)
    assert out.strip().splitlines()[-1] == "FAILURE ValueError: broken", err
    assert proc.returncode == 1
    proc = watch("no-such-task")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "no task with id 'no-such-task'" in err


def test_watch_gives_up_after_its_timeout(celery, m, client):
    key = f"release-{uuid.uuid4().hex}"
    future = celery.submit(m.report_until_released, key, 1)
    try:
        proc = watch(future.id, "--timeout", "2")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "is still" in err and "after 2.0 seconds" in err
    finally:
        client.rpush(key, "go")
    assert future.result(timeout=30) == "released"


def test_watch_draws_clicks_bar_on_a_terminal(celery, m, client):
    key = f"release-{uuid.uuid4().hex}"
    future = celery.submit(m.report_until_released, key, 2)
    leader, follower = pty.openpty()
    screen = ""
    try:
        proc = subprocess.Popen(
            [FLASK, "--app", "tests.apps.basic", "celery", "watch", future.id],
            env=helpers.test_env(COLUMNS="100"),
            cwd=helpers.ROOT,
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        while True:
            try:
                chunk = os.read(leader, 4096).decode()
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            screen += chunk
            if "2/3" in screen:
                client.rpush(key, "go")
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        client.rpush(key, "go")
        os.close(leader)
    assert "#" in screen and "2/3" in screen and "3/3" in screen, screen
    assert screen.rstrip().endswith("SUCCESS 'released'"), screen
