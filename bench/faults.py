"""flask_execute against raw Celery under faults: a stop under load, a stalled broker, a
Redis restart under load, a replayed message, an oversized argument.

Run from the repository root::

    .venv/bin/python bench/faults.py

Every case runs on a private ``redis-server`` (:class:`tests.helpers.PrivateRedis`: a
free port, its own folder in a temporary directory, AOF on), never on the shared one,
with real ``celery worker`` subprocesses in sessions of their own, the same pool and
concurrency on both sides: ``faults_fe.py`` (flask_execute, its defaults) and
``faults_raw.py`` (Celery's defaults).

1. stop under load: 2 tasks of 3 s running (prefork, concurrency 2); flask_execute's
   local worker stopped by ``celery.stop(timeout=10)``, raw Celery's the way a
   control-group kill does it (SIGTERM to every process, SIGKILL after 10 s);
2. submit on a stalled broker (SIGSTOP): ``submit`` with ``CELERY_SUBMIT_TIMEOUT = 2``
   against ``add.delay``, each bounded by a thread joined for 15 s; then whether the
   error's ``may_arrive`` held once Redis answered;
3. Redis restarted for 5 s under 50 tasks of 0.3 s (concurrency 4): SUCCESS, FAILURE
   and never finished within 60 s of the restart;
4. a captured message pushed again under another task id: run or refused;
5. a 32 MiB argument: refused at submit, or published.

Prints a table (PASS/FAIL against the targets of issue 8 for flask_execute, raw Celery
reported); exits non-zero only if something crashed. Every worker and the redis-server
are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import faulthandler
import gc
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import redis
from celery import states
from celery.exceptions import TimeoutError as CeleryTimeoutError
from common import (
    BENCH,
    BROKER_ENV,
    POOL,
    Worker,
    _die_with_parent,
    bench_env,
    leftover_processes,
    progress,
    terminate_on_sigterm,
    verdict,
)

from flask_execute import BrokerUnavailable, SerializationError
from tests.helpers import PrivateRedis, private_redis, wait_for

STOP_TASK_SECONDS = 3.0
STOP_TIMEOUT = 10.0  # celery.stop(timeout) on our side; the SIGKILL delay on raw's
STALL_BOUND = 15.0  # longest wait for a submit on a stalled broker
RESTART_TASKS = 50
RESTART_TASK_SECONDS = 0.3
RESTART_CONCURRENCY = 4
RESTART_DOWN = 5.0  # seconds Redis stays down
RESTART_STARTED = 8  # tasks started on each side before the restart
RESTART_BOUND = 60.0  # seconds after the restart for every result
BIG = 32 * 2**20  # bytes of the oversized argument
MIB = 2**20


@dataclass
class Line:
    """One line of the result table."""

    what: str
    ours: str
    raw: str
    target: str = ""
    result: str = "info"


def print_table(title: str, lines: list[Line]) -> None:
    header = Line("measure", "flask_execute", "raw Celery", "target", "result")
    fields = list(Line.__dataclass_fields__)
    cells = [header, *lines]
    widths = [max(len(getattr(c, f)) for c in cells) for f in fields]
    rule = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print(rule)
    for i, line in enumerate(cells):
        values = [getattr(line, f) for f in fields]
        print("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip())
        if i == 0:
            print(rule)
    print(rule)


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def tally(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counts.most_common()) or "-"


def future_outcome(future: cf.Future[Any]) -> str:
    """``result``, ``pending`` or the name of the exception a Future raises."""
    if not future.done():
        return "pending"
    error = future.exception()
    return "result" if error is None else type(error).__name__


def session_members(sid: int) -> list[psutil.Process]:
    """The live processes of session ``sid`` (a worker started in a session of its own:
    the worker and its pool, like the control group of a systemd unit)."""
    members = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(p.pid) == sid:
                members.append(p)
        except (OSError, psutil.Error):
            continue
    return members


def control_group_kill(proc: subprocess.Popen[bytes], grace: float) -> float:
    """Stop a worker as systemd's default ``KillMode=control-group`` does: SIGTERM to
    every process of the group at once, SIGKILL to what is left after ``grace``.
    Return the seconds until the group is empty."""
    began = time.monotonic()
    for p in session_members(proc.pid):
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)

    def empty() -> bool:
        proc.poll()  # reap the main process: a zombie is gone
        return not session_members(proc.pid)

    try:
        wait_for(empty, timeout=grace, interval=0.02, message="the group to exit")
    except AssertionError:
        for p in session_members(proc.pid):
            with contextlib.suppress(psutil.Error):
                p.kill()
        wait_for(empty, timeout=5, interval=0.02, message="the group to die")
    return time.monotonic() - began


class Bench:
    """The cases, on one private Redis, with the workers they start."""

    def __init__(self, server: PrivateRedis, fe: ModuleType, raw: ModuleType, folder: Path):
        self.server = server
        self.fe = fe
        self.raw = raw
        self.folder = folder
        self.workers: list[Worker] = []
        self.crashed = False
        #: Every raw AsyncResult made: Celery keeps the pending ones subscribed, and
        #: unsubscribes (from Redis) when one is collected, so they go before Redis.
        self.raw_results: list[Any] = []

    def track(self, result: Any) -> Any:
        self.raw_results.append(result)
        return result

    # -- helpers -----------------------------------------------------------------------

    def redis(self) -> redis.Redis:
        return self.server.client(socket_timeout=5, socket_connect_timeout=5)

    def count(self, key: str, what: str) -> int:
        return int(self.redis().llen(f"{key}:{what}"))

    def wait_started(self, n: int, *keys: str, timeout: float = 30) -> None:
        wait_for(
            lambda: all(self.count(k, "started") >= n for k in keys),
            timeout=timeout,
            interval=0.02,
            message=f"{n} tasks started ({', '.join(keys)})",
        )

    def queued_ids(self, queue: str) -> list[str]:
        return [json.loads(m)["headers"]["id"] for m in self.redis().lrange(queue, 0, -1)]

    def shows_up(self, queue: str, ids: Iterable[str], timeout: float = 5) -> bool:
        """Whether every id of ``ids`` is (or gets, within ``timeout``) in ``queue``."""
        wanted = set(ids)
        try:
            wait_for(lambda: wanted <= set(self.queued_ids(queue)), timeout=timeout)
        except AssertionError:
            return False
        return True

    def start_worker(
        self, app: str, queue: str, name: str, concurrency: int, **extra_env: str
    ) -> Worker:
        """A plain ``celery worker`` subprocess in a session of its own, with the flags
        flask_execute gives its local workers (no mingle, no gossip)."""
        node = f"{name}-{uuid.uuid4().hex[:6]}@%h"
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-l", "info"]
        argv += ["-P", POOL, "-c", str(concurrency), "--without-gossip", "--without-mingle"]
        argv += ["-Q", queue, "-n", node]
        log = self.folder / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                env=bench_env(self.server.url(), **extra_env),
                cwd=BENCH,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        worker = Worker(proc, node, log)
        self.workers.append(worker)
        return worker

    def capture(self, queue: str) -> bytes:
        """Take the one message waiting in ``queue`` (kombu's Redis transport: a list)."""
        found: bytes = wait_for(lambda: self.redis().rpop(queue), timeout=10, message=queue)
        return found

    def repush(self, raw_message: bytes, queue: str) -> str:
        """Push a copy of a captured message to ``queue`` under a new task id (what
        anyone with access to the broker can do); return the new id."""
        message = json.loads(raw_message)
        task_id = str(uuid.uuid4())
        message["headers"]["id"] = message["properties"]["correlation_id"] = task_id
        message["properties"]["delivery_tag"] = uuid.uuid4().hex
        message["properties"]["delivery_info"]["routing_key"] = queue
        self.redis().lpush(queue, json.dumps(message))
        return task_id

    def final_meta(self, task_id: str, timeout: float = 15) -> dict[str, Any] | None:
        """The final state stored for ``task_id``, or None if none within ``timeout``."""

        def final() -> dict[str, Any] | None:
            raw = self.redis().get(f"celery-task-meta-{task_id}")
            meta = json.loads(raw) if raw else None
            return meta if meta and meta["status"] in states.READY_STATES else None

        try:
            found: dict[str, Any] = wait_for(final, timeout=timeout, message=task_id)
        except AssertionError:
            return None
        return found

    # -- the run -----------------------------------------------------------------------

    def run(self) -> list[Line]:
        cases: dict[int, list[Line]] = {}
        cases[1] = self.guard("1. stop under load", self.case_stop)
        cases[2] = self.guard("2. submit on a stalled broker", self.case_stall)
        cases[5] = self.guard("5. 32 MiB argument", self.case_oversized)
        serving = self.guard("3./4. workers", self.start_serving)
        if serving:  # the workers did not start: cases 3 and 4 cannot run
            cases[4] = cases[3] = serving
        else:
            cases[4] = self.guard("4. replayed message", self.case_replay)
            cases[3] = self.guard("3. Redis restarted under load", self.case_restart)
        return [line for n in sorted(cases) for line in cases[n]] + self.defaults()

    def guard(self, name: str, case: Callable[[], list[Line]]) -> list[Line]:
        """Run one case; a crash is reported in the table, and fails the run."""
        try:
            return case()
        except Exception as exc:
            self.crashed = True
            traceback.print_exc()
            return [Line(name, f"crashed: {type(exc).__name__}", "-", "", "ERROR")]

    def close(self) -> None:
        """Stop every worker and local service; close every connection to the server."""
        for worker in self.workers:
            worker.stop()
        with contextlib.suppress(Exception):
            self.fe.stop_celery.stop(timeout=STOP_TIMEOUT)
        for app in (self.fe.app, self.fe.stop_app, self.fe.stall_app):
            with contextlib.suppress(Exception):
                app.extensions["flask_execute"].futures.close()
        for result in self.raw_results:
            with contextlib.suppress(Exception):
                result.backend.remove_pending_result(result)
        self.raw_results.clear()
        gc.collect()
        with contextlib.suppress(Exception):
            self.raw.app.close()

    # -- 1. stop under load ------------------------------------------------------------

    def case_stop(self) -> list[Line]:
        fe, raw = self.fe, self.raw
        progress("1. stop under load: flask_execute (celery.start(), celery.stop(timeout=10))")
        celery = fe.stop_celery
        celery.start()
        futures = [celery.submit(fe.slow, STOP_TASK_SECONDS, "stop_fe") for _ in range(2)]
        self.wait_started(2, "stop_fe")
        began = time.monotonic()
        celery.stop(timeout=STOP_TIMEOUT)
        fe_took = time.monotonic() - began
        fe_finished = self.count("stop_fe", "finished")
        with contextlib.suppress(AssertionError):  # results published before the exit
            wait_for(lambda: all(f.done() for f in futures), timeout=5)
        fe_seen = Counter(future_outcome(f) for f in futures)

        progress("1. stop under load: raw Celery (SIGTERM to the group, SIGKILL after 10 s)")
        worker = self.start_worker("faults_raw", raw.STOP_QUEUE, "raw-stop", fe.STOP_CONCURRENCY)
        worker.wait_ready(raw.app)
        results = [
            self.track(raw.slow.apply_async((STOP_TASK_SECONDS, "stop_raw"), queue=raw.STOP_QUEUE))
            for _ in range(2)
        ]
        self.wait_started(2, "stop_raw")
        raw_took = control_group_kill(worker.proc, STOP_TIMEOUT)
        raw_finished = self.count("stop_raw", "finished")
        raw_seen: Counter[str] = Counter()
        for r in results:
            state = r.state
            raw_seen[f"{state} {type(r.result).__name__}" if state == "FAILURE" else state] += 1
        return [
            Line(
                "1. stop under load: tasks finished (2 x 3 s, -c 2)",
                f"{fe_finished}/2",
                f"{raw_finished}/2",
                "2/2",
                verdict(fe_finished == 2),
            ),
            Line(
                "   stop time",
                f"{seconds(fe_took)} (stop(timeout=10))",
                f"{seconds(raw_took)} (control-group kill)",
            ),
            Line("   what the caller sees", tally(fe_seen), tally(raw_seen)),
        ]

    # -- 2. a stalled broker -----------------------------------------------------------

    def case_stall(self) -> list[Line]:
        fe, raw = self.fe, self.raw
        progress("2. submit on a stalled broker")
        celery = fe.stall_celery
        celery.submit(fe.add, 0, 0)  # connected, the result listener subscribed
        self.track(raw.add.delay(0, 0))  # connected, the result consumer subscribed
        outcomes: dict[str, tuple[float, Any]] = {}

        def call(side: str, fn: Callable[[], Any]) -> None:
            began = time.monotonic()
            try:
                value = fn()
            except Exception as exc:
                value = exc
            outcomes[side] = (time.monotonic() - began, value)

        calls: dict[str, Callable[[], Any]] = {
            "fe": lambda: celery.submit(fe.add, 1, 2),
            "raw": lambda: self.track(raw.add.delay(1, 2)),
        }
        threads = {
            side: threading.Thread(target=call, args=(side, fn), name=f"stall-{side}", daemon=True)
            for side, fn in calls.items()
        }
        self.server.pause()
        try:
            began = time.monotonic()
            for thread in threads.values():
                thread.start()
            for thread in threads.values():  # the stall lasts until both return, or 15 s
                thread.join(max(0.0, began + STALL_BOUND - time.monotonic()))
            hung = {side for side, thread in threads.items() if thread.is_alive()}
        finally:
            self.server.resume()
        resumed = time.monotonic()
        for thread in threads.values():  # a hung call goes on once Redis answers
            thread.join(30)
        progress(f"   resumed Redis; hung: {sorted(hung) or 'none'}")

        fe_line = self.stall_time("fe", outcomes, hung, resumed - began)
        raw_line = self.stall_time("raw", outcomes, hung, resumed - began)
        took, error = outcomes.get("fe", (None, None))
        limit = fe.STALL_SUBMIT_TIMEOUT + 1
        fe_ok = "fe" not in hung and took is not None and took <= limit
        lines = [
            Line(
                "2. stalled broker: submit returns or raises in",
                fe_line,
                raw_line,
                f"<= {limit:g} s",
                verdict(fe_ok and isinstance(error, BrokerUnavailable)),
            )
        ]
        if isinstance(error, BrokerUnavailable):
            ids = error.maybe_sent if error.may_arrive else error.task_ids
            queued = self.shows_up(fe.STALL_QUEUE, ids)
            claim = "may still arrive" if error.may_arrive else "nothing was published"
            fact = "in the queue" if queued else "not in the queue"
            lines.append(
                Line("   the error says (may_arrive)", f"{claim} ({error.may_arrive})", "-")
            )
            lines.append(
                Line(
                    "   the claim once Redis resumed",
                    f"held: id {fact}" if queued == error.may_arrive else f"false: id {fact}",
                    self.raw_after_stall(outcomes),
                    "holds",
                    verdict(queued == error.may_arrive),
                )
            )
        # Nothing of this case may reach the workers of the next ones.
        self.redis().delete(fe.STALL_QUEUE, raw.QUEUE)
        return lines

    def stall_time(
        self, side: str, outcomes: dict[str, tuple[float, Any]], hung: set[str], stall: float
    ) -> str:
        if side not in outcomes:
            return f"> {STALL_BOUND:g} s (hung, still after resume)"
        took, value = outcomes[side]
        if side in hung:
            return (
                f"> {STALL_BOUND:g} s (hung; returned {max(0.0, took - stall):.2f} s after resume)"
            )
        what = type(value).__name__ if isinstance(value, Exception) else "returned"
        return f"{seconds(took)} ({what})"

    def raw_after_stall(self, outcomes: dict[str, tuple[float, Any]]) -> str:
        _, value = outcomes.get("raw", (None, None))
        if value is None or isinstance(value, Exception):
            return f"delay(): {type(value).__name__}"
        queued = self.shows_up(self.raw.QUEUE, [value.id])
        return "published once resumed" if queued else "delay() returned, not in the queue"

    # -- 5. an oversized argument ------------------------------------------------------

    def case_oversized(self) -> list[Line]:
        fe, raw = self.fe, self.raw
        progress("5. a 32 MiB argument")
        payload = os.urandom(BIG)  # binary data, a file's say
        client = self.redis()
        before = client.llen(fe.HOLD_QUEUE)
        try:
            fe.celery.submit(fe.add, 1, payload, queue=fe.HOLD_QUEUE)
            fe_what = "accepted"
        except SerializationError:
            fe_what = "SerializationError at submit"
        fe_added = client.llen(fe.HOLD_QUEUE) - before

        before = client.llen(raw.HOLD_QUEUE)
        began = time.monotonic()
        try:
            self.track(raw.add.apply_async((1, payload), queue=raw.HOLD_QUEUE))
            raw_what = f"published in {seconds(time.monotonic() - began)}"
        except Exception as exc:
            raw_what = f"{type(exc).__name__} at delay"
        raw_added = client.llen(raw.HOLD_QUEUE) - before
        stored = client.lindex(raw.HOLD_QUEUE, 0) if raw_added else None
        size = f", {len(stored) / MIB:.1f} MiB in Redis" if stored else ""
        client.delete(fe.HOLD_QUEUE, raw.HOLD_QUEUE)
        # Compact the append-only file, so that the restart of case 3 has no large
        # history to load (the outage must last RESTART_DOWN, no more).
        client.bgrewriteaof()
        wait_for(
            lambda: (
                not any(
                    int(client.info("persistence")[k])
                    for k in ("aof_rewrite_in_progress", "aof_rewrite_scheduled")
                )
            ),
            timeout=30,
            message="the AOF rewrite",
        )
        return [
            Line(
                "5. 32 MiB argument: submit, messages queued",
                f"{fe_what}, +{fe_added}",
                f"{raw_what}, +{raw_added}{size}",
                "refused, +0",
                verdict(fe_what.startswith("SerializationError") and fe_added == 0),
            )
        ]

    # -- 3. and 4.: workers of both sides, concurrency 4 --------------------------------

    def start_serving(self) -> list[Line]:
        fe, raw = self.fe, self.raw
        progress("starting one worker per side (-P prefork -c 4) for cases 3 and 4")
        ours = self.start_worker(
            "flask_execute.celery", fe.QUEUE, "fe", RESTART_CONCURRENCY, FLASK_APP="faults_fe:app"
        )
        theirs = self.start_worker("faults_raw", raw.QUEUE, "raw", RESTART_CONCURRENCY)
        ours.wait_ready(fe.celery.celery_app)
        theirs.wait_ready(raw.app)
        return []

    def case_replay(self) -> list[Line]:
        fe, raw = self.fe, self.raw
        progress("4. a captured message pushed again under another task id")
        fe.celery.submit(fe.add, 2, 3, queue=fe.HOLD_QUEUE)
        fe_meta = self.final_meta(self.repush(self.capture(fe.HOLD_QUEUE), fe.QUEUE))
        self.track(raw.add.apply_async((2, 3), queue=raw.HOLD_QUEUE))
        raw_meta = self.final_meta(self.repush(self.capture(raw.HOLD_QUEUE), raw.QUEUE))

        def told(meta: dict[str, Any] | None) -> str:
            if meta is None:
                return "not run within 15 s"
            if meta["status"] == states.FAILURE:
                return f"refused ({meta['result'].get('exc_type')})"
            result = meta["result"] if isinstance(meta["result"], int) else "..."
            return f"ran ({meta['status']}, result {result})"

        refused = bool(
            fe_meta
            and fe_meta["status"] == states.FAILURE
            and fe_meta["result"].get("exc_type") == "SignatureError"
        )
        return [
            Line(
                "4. a message replayed under another id",
                told(fe_meta),
                told(raw_meta),
                "refused",
                verdict(refused),
            )
        ]

    def case_restart(self) -> list[Line]:
        fe, raw = self.fe, self.raw
        progress(f"3. Redis restarted for {RESTART_DOWN:g} s under {RESTART_TASKS} tasks")
        futures = [
            fe.celery.submit(fe.slow, RESTART_TASK_SECONDS, "restart_fe")
            for _ in range(RESTART_TASKS)
        ]
        results = [
            self.track(raw.slow.delay(RESTART_TASK_SECONDS, "restart_raw"))
            for _ in range(RESTART_TASKS)
        ]
        self.wait_started(RESTART_STARTED, "restart_fe", "restart_raw")
        self.server.restart(down=RESTART_DOWN)
        restarted = time.monotonic()
        deadline = restarted + RESTART_BOUND
        progress(f"   Redis back; waiting up to {RESTART_BOUND:g} s for every result")

        # Ours: the Futures resolve by themselves (the result listener); note when.
        resolved: list[float] = []
        for future in futures:
            future.add_done_callback(lambda _: resolved.append(time.monotonic()))
        # Raw Celery: AsyncResult.get per task until the deadline; past it, a read.
        theirs: Counter[str] = Counter()
        theirs_errors: Counter[str] = Counter()
        theirs_last = 0.0
        for result in results:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    state = result.state
                    theirs[state if state in (states.SUCCESS, states.FAILURE) else "never"] += 1
                    if state == states.FAILURE:
                        theirs_errors[type(result.result).__name__] += 1
                    continue
                result.get(timeout=remaining)
                theirs["SUCCESS"] += 1
            except CeleryTimeoutError:
                theirs["never"] += 1
                continue
            except Exception as exc:
                failed = self.state_of(result) == states.FAILURE
                theirs["FAILURE" if failed else "get() raised"] += 1
                theirs_errors[type(exc).__name__] += 1
            theirs_last = time.monotonic() - restarted
        cf.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        ours: Counter[str] = Counter()
        ours_errors: Counter[str] = Counter()
        for future in futures:
            if not future.done():
                ours["never"] += 1
            elif future.exception() is not None:
                ours["FAILURE"] += 1
                ours_errors[type(future.exception()).__name__] += 1
            else:
                ours["SUCCESS"] += 1
        ours_last = max(resolved, default=restarted) - restarted

        left = self.left_on_broker()

        def split(counts: Counter[str]) -> str:
            return " / ".join(str(counts[k]) for k in ("SUCCESS", "FAILURE", "never"))

        extra = f" + {theirs['get() raised']} get() raised" if theirs["get() raised"] else ""
        return [
            Line(
                f"3. Redis down {RESTART_DOWN:g} s under {RESTART_TASKS} tasks: "
                "SUCCESS / FAILURE / never",
                split(ours),
                split(theirs) + extra,
                f"{RESTART_TASKS} / 0 / 0",
                verdict(ours["SUCCESS"] == RESTART_TASKS),
            ),
            Line(
                "   failures",
                tally(ours_errors),
                tally(theirs_errors),
            ),
            Line(
                "   last result, after the restart",
                seconds(ours_last),
                seconds(theirs_last),
            ),
            Line(
                "   runs the tasks recorded (none twice: <= 50)",
                str(self.count("restart_fe", "started")),
                str(self.count("restart_raw", "started")),
            ),
            Line(
                f"   left on the broker after {RESTART_BOUND:g} s: queued / unacked",
                f"{left[fe.QUEUE][0]} / {left[fe.QUEUE][1]}",
                f"{left[raw.QUEUE][0]} / {left[raw.QUEUE][1]}",
            ),
        ]

    @staticmethod
    def state_of(result: Any) -> str:
        try:
            return str(result.state)
        except Exception as exc:
            return type(exc).__name__

    def left_on_broker(self) -> dict[str, tuple[int, int]]:
        """Per queue: (messages waiting, messages delivered and not acknowledged)."""
        client = self.redis()
        unacked: Counter[str] = Counter()
        for entry in client.hvals("unacked"):
            _message, _exchange, routing_key = json.loads(entry)
            unacked[routing_key] += 1
        return {q: (int(client.llen(q)), unacked[q]) for q in (self.fe.QUEUE, self.raw.QUEUE)}

    # -- the defaults that matter ------------------------------------------------------

    def defaults(self) -> list[Line]:
        from kombu.transport.redis import Channel

        ours = self.fe.celery.celery_app.conf
        theirs = self.raw.app.conf
        ours_transport = ours.broker_transport_options
        theirs_transport = theirs.broker_transport_options or {}
        theirs_visibility = theirs_transport.get("visibility_timeout", Channel.visibility_timeout)
        theirs_socket = theirs_transport.get("socket_timeout", Channel.socket_timeout)
        return [
            Line(
                "defaults: visibility_timeout",
                f"{ours_transport['visibility_timeout']:g} s",
                f"{theirs_visibility:g} s (kombu)",
            ),
            Line(
                "defaults: submit timeout (broker socket timeout)",
                f"{self.fe.app.config['CELERY_SUBMIT_TIMEOUT']:g} s "
                f"({ours_transport['socket_timeout']:g} s)",
                f"none ({theirs_socket})",
            ),
            Line(
                "defaults: result written through a backend outage",
                f"retried ({ours.result_backend_max_retries} tries)"
                if ours.result_backend_always_retry
                else "no",
                f"retried ({theirs.result_backend_max_retries} tries)"
                if theirs.result_backend_always_retry
                else "no",
            ),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    # `kill -USR1 <pid>` prints every thread's stack, should a run ever seem stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    for name in ("FLASK_APP", "FLASK_EXECUTE_APP"):  # the apps' own import paths win
        os.environ.pop(name, None)
    with terminate_on_sigterm(), tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        folder = Path(tmp)
        with private_redis(folder / "redis") as server:
            os.environ[BROKER_ENV] = server.url()  # read by both side apps at import
            os.environ["FAULTS_LOG_DIR"] = str(folder / "logs")
            fe = importlib.import_module("faults_fe")
            raw = importlib.import_module("faults_raw")
            print(
                f"private redis-server on port {server.port}; pool={POOL}; "
                f"{os.cpu_count()} CPUs; Python {sys.version.split()[0]}"
            )
            bench = Bench(server, fe, raw, folder)
            try:
                lines = bench.run()
            finally:
                progress("stopping every worker and the redis-server")
                bench.close()
    print_table("flask_execute vs raw Celery under faults (bench/faults.py)", lines)
    left = leftover_processes()
    print(f"workers and redis-server stopped; processes left behind: {left or 'none'}")
    return 1 if bench.crashed else 0


if __name__ == "__main__":
    sys.exit(main())
