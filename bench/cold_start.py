"""Cold start: flask_execute's self-starting worker against a plain ``celery worker``.

Run from the repository root (Redis on 127.0.0.1:6379)::

    .venv/bin/python bench/cold_start.py [--reps 5]

Each repetition starts three fresh interpreters, in alternating order:

- ``cold_fe.py``: ``Celery(app)`` then the first ``submit(add, 1, 2).result()``, the
  local worker starting by itself (``CELERY_WORKERS = 1``, ``CELERY_FLOWER = False``);
  then ``celery.status()`` twenty times with the worker online;
- ``cold_raw.py``: spawns a plain ``celery worker`` with Celery's defaults (issue 3's
  baseline) and sends it the registered ``add`` task right away;
- ``cold_raw.py`` again with the local workers' flags (``--without-mingle
  --without-gossip``): the stricter comparison, reported for information. What
  separates us from it is mostly loading Flask, in the app and in the worker.

The time counted runs from spawning the interpreter to the result reaching the
benchmark. Prints medians, ratios and PASS/FAIL against issue 3's targets (cold start at
most 1.2x the plain worker; ``status()`` under 50 ms); exits non-zero only on a crash.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    Row,
    bench_env,
    helpers,
    leftover_processes,
    ms,
    print_table,
    redis_db,
    terminate_on_sigterm,
    verdict,
)

COLD_START_TARGET = 1.2  # flask_execute / plain worker, at most
STATUS_TARGET = 0.050  # seconds, median of status() with the workers online
TIMEOUT = 120.0


def run_side(script: str, broker: str, logs: Path, **extra: str) -> dict[str, Any]:
    """Run one side in a fresh interpreter; return its reports and the measured time."""
    logs.mkdir(parents=True, exist_ok=True)
    env = bench_env(broker, FLASK_EXECUTE_BENCH_LOGS=str(logs), **extra)
    err = open(logs / f"{script}.stderr", "wb")  # noqa: SIM115
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, script, str(logs / "plain-worker.log")],
        cwd=BENCH,
        env=env,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        start_new_session=True,
    )
    reports: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the child prints its reports, then stops its worker
            report = json.loads(line)
            if report["event"] == "result":
                report["wall"] = time.perf_counter() - start
            reports[report["event"]] = report
        proc.wait(timeout=TIMEOUT)
    finally:
        err.close()
        if proc.poll() is None:
            helpers.stop_process_tree(proc)
    if proc.returncode != 0 or "result" not in reports:
        detail = (logs / f"{script}.stderr").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{script} failed (exit {proc.returncode}):\n{detail}")
    assert reports["result"]["result"] == 3, reports
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions per side")
    args = parser.parse_args(argv)

    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    same_flags: list[dict[str, Any]] = []
    with terminate_on_sigterm(), redis_db() as broker, tempfile.TemporaryDirectory() as tmp:
        print(f"broker {broker}; {args.reps} repetitions per side, alternating")
        for rep in range(args.reps):
            order = [
                ("cold_fe.py", ours, "default"),
                ("cold_raw.py", theirs, "default"),
                ("cold_raw.py", same_flags, "ours"),
            ]
            for script, into, flags in order if rep % 2 == 0 else reversed(order):
                logs = Path(tmp) / f"{rep}-{script}-{flags}"
                into.append(run_side(script, broker, logs, COLD_RAW_FLAGS=flags))
            print(
                f"  rep {rep + 1}: flask_execute {ms(ours[-1]['result']['wall'])}, "
                f"plain worker {ms(theirs[-1]['result']['wall'])}",
                file=sys.stderr,
                flush=True,
            )

    wall_ours = statistics.median(r["result"]["wall"] for r in ours)
    wall_raw = statistics.median(r["result"]["wall"] for r in theirs)
    wall_same = statistics.median(r["result"]["wall"] for r in same_flags)
    inner_ours = statistics.median(r["result"]["first"] for r in ours)
    inner_raw = statistics.median(r["result"]["first"] for r in theirs)
    init = statistics.median(r["result"]["init"] for r in ours)
    init_raw = statistics.median(r["result"]["init"] for r in theirs)
    status = statistics.median(r["status"]["median"] for r in ours)
    status_max = max(r["status"]["max"] for r in ours)
    ratio = wall_ours / wall_raw
    rows = [
        Row(
            f"cold start to first result, median of {args.reps}",
            ms(wall_ours),
            ms(wall_raw),
            f"{ratio:.2f}x",
            f"<= {COLD_START_TARGET}x",
            verdict(ratio <= COLD_START_TARGET),
        ),
        Row(
            "    vs a worker with our flags (no mingle/gossip)",
            ms(wall_ours),
            ms(wall_same),
            f"{wall_ours / wall_same:.2f}x",
            "",
            "info",
        ),
        Row(
            "    each repetition",
            ", ".join(f"{r['result']['wall']:.2f}" for r in ours) + " s",
            ", ".join(f"{r['result']['wall']:.2f}" for r in theirs) + " s",
            "",
            "",
            "info",
        ),
        Row(
            "    same, after the interpreter's start",
            ms(inner_ours),
            ms(inner_raw),
            f"{inner_ours / inner_raw:.2f}x",
            "",
            "info",
        ),
        Row(
            "    of which imports + app creation",
            ms(init),
            ms(init_raw),
            f"{init / init_raw:.2f}x",
            "",
            "info",
        ),
        Row(
            "celery.status(), workers online (median)",
            ms(status),
            "-",
            "",
            f"< {ms(STATUS_TARGET)}",
            verdict(status < STATUS_TARGET),
        ),
        Row("    slowest status() call", ms(status_max), "-", "", "", "info"),
    ]
    print_table("cold start: flask_execute vs a plain celery worker (bench/cold_start.py)", rows)
    left = leftover_processes()
    print(f"processes left behind: {left or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
