"""flask_execute's batched ``map`` against raw Celery: throughput, one call, memory.

Run from the repository root (Redis on 127.0.0.1:6379)::

    .venv/bin/python bench/bulk.py

In one run, on one leased Redis database, with one real ``celery worker`` subprocess per
side (same pool, concurrency and prefetch; see :mod:`common`):

(a) ``celery.map(add, *[(i, i) for i in range(N)])`` until every result is in, in calls
    per second, against raw Celery's per-task ``add.delay(i, i)`` then ``.get()`` of
    each (``--raw-n`` calls; rates are compared); median of ``--reps`` alternated runs;
(b) the same map against raw Celery's own batching, ``add.chunks(zip(xs, ys), 100)``
    (``.apply_async()``, ``.get()``, flattened), on the same N calls;
(c) a map of one call against one submit, ``.result()`` of each, median of
    ``--samples`` interleaved samples;
(d) peak RSS growth of a fresh web process (``bulk_memory.py``) over a ``starmap`` of
    ``--memory-n`` calls, from before the map to every result in, per call.

Prints a table with ratios and PASS/FAIL against the targets of issue 9; exits non-zero
only if something crashed. Every worker is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import math
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from common import (
    BENCH,
    Row,
    bench_env,
    both_sides,
    compared,
    helpers,
    leftover_processes,
    median,
    ms,
    print_table,
    progress,
    redis_db,
    terminate_on_sigterm,
    us,
    verdict,
)

from flask_execute.chunks import chunk_sizes

MAP_TARGET = 10.0  # map calls/s / raw per-task calls/s, at least
CHUNKS_TARGET = 1.0  # map calls/s / raw add.chunks calls/s, at least (stretch)
ONE_CALL_TARGET = 1.10  # map of one call / one submit, at most
MEMORY_TARGET = 2500  # bytes of peak RSS growth per call, at most
TIMEOUT = 300.0  # bound of every wait for results

Run = tuple[float, float]  # (seconds until the calls were sent, seconds in all)


def map_ours(fe: ModuleType, n: int, chunksize: int | None = None) -> Run:
    """``celery.map`` of ``n`` calls, then every result."""
    calls = [(i, i) for i in range(n)]
    send = fe.celery.map if chunksize is None else fe.celery.options(chunksize=chunksize).map
    start = time.perf_counter()
    pool = send(fe.add, *calls)
    sent = time.perf_counter()
    total = sum(pool.result(timeout=TIMEOUT))
    end = time.perf_counter()
    assert total == n * (n - 1), total
    return sent - start, end - start


def per_task_raw(raw: ModuleType, n: int) -> Run:
    """``n`` ``add.delay`` calls, then every ``get``."""
    start = time.perf_counter()
    results = [raw.add.delay(i, i) for i in range(n)]
    sent = time.perf_counter()
    total = sum(r.get(timeout=TIMEOUT) for r in results)
    end = time.perf_counter()
    assert total == n * (n - 1), total
    return sent - start, end - start


def chunks_raw(raw: ModuleType, n: int, size: int) -> Run:
    """``add.chunks(zip(xs, ys), size).apply_async()``, then ``get``, flattened."""
    xs = ys = range(n)
    start = time.perf_counter()
    result = raw.add.chunks(zip(xs, ys, strict=True), size).apply_async()
    sent = time.perf_counter()
    total = sum(itertools.chain.from_iterable(result.get(timeout=TIMEOUT)))
    end = time.perf_counter()
    assert total == n * (n - 1), total
    return sent - start, end - start


def one_call(fe: ModuleType, samples: int) -> tuple[list[float], list[float]]:
    """Interleaved ``map(add, (1, 2)).result()`` and ``submit(add, 1, 2).result()``,
    which goes first alternating: ``(map, submit)`` durations in seconds."""
    clock = time.perf_counter
    celery, add = fe.celery, fe.add
    maps: list[float] = []
    submits: list[float] = []

    def one_map() -> None:
        start = clock()
        assert celery.map(add, (1, 2)).result(timeout=TIMEOUT) == [3]
        maps.append(clock() - start)

    def one_submit() -> None:
        start = clock()
        assert celery.submit(add, 1, 2).result(timeout=TIMEOUT) == 3
        submits.append(clock() - start)

    for i in range(samples):
        for measure_one in (one_map, one_submit) if i % 2 == 0 else (one_submit, one_map):
            measure_one()
    return maps, submits


def memory(broker: str, n: int, logs: Path) -> dict[str, Any]:
    """Run ``bulk_memory.py`` in a fresh interpreter; return its JSON report."""
    err_path = logs / "bulk_memory.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "bulk_memory.py", "--n", str(n), "--timeout", str(TIMEOUT)],
            cwd=BENCH,
            env=bench_env(broker),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=TIMEOUT + 60)
        finally:
            if proc.poll() is None:
                helpers.stop_process_tree(proc)
    if proc.returncode != 0:
        detail = err_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"bulk_memory.py failed (exit {proc.returncode}):\n{detail}")
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="calls per map (a), (b)")
    parser.add_argument(
        "--raw-n", type=int, default=2000, help="calls per raw per-task run (a); rates compared"
    )
    parser.add_argument("--chunk", type=int, default=100, help="raw add.chunks size (b)")
    parser.add_argument("--reps", type=int, default=3, help="alternated runs per side")
    parser.add_argument("--samples", type=int, default=200, help="one-call samples per side")
    parser.add_argument("--memory-n", type=int, default=100_000, help="calls of the map (d)")
    args = parser.parse_args(argv)
    # `kill -USR1 <pid>` prints every thread's stack, should a run ever seem stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    command = shlex.join([sys.executable, *sys.argv])
    started = time.perf_counter()

    with terminate_on_sigterm(), redis_db() as broker, tempfile.TemporaryDirectory() as tmp:
        print(f"command: {command}")
        with both_sides(broker, Path(tmp)) as (fe, raw):
            rows = measure(fe, raw, args, broker, Path(tmp))
    print_table("flask_execute map vs raw Celery (bench/bulk.py)", rows)
    left = leftover_processes()
    print(f"workers stopped; processes left behind: {left or 'none'}")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


def rate(n: int, runs: list[Run]) -> float:
    """Calls per second of the median run."""
    return n / median([total for _, total in runs])


def measure(
    fe: ModuleType, raw: ModuleType, args: argparse.Namespace, broker: str, logs: Path
) -> list[Row]:
    n, raw_n = args.n, args.raw_n
    # Warm up both sides: connections, the listener, the workers' first imports.
    progress("warming up")
    map_ours(fe, 200)
    per_task_raw(raw, 200)
    chunks_raw(raw, 200, args.chunk)
    one_call(fe, 10)

    sides: dict[str, tuple[int, Callable[[], Run]]] = {
        "map": (n, lambda: map_ours(fe, n)),
        "map chunksize": (n, lambda: map_ours(fe, n, args.chunk)),
        "raw per-task": (raw_n, lambda: per_task_raw(raw, raw_n)),
        "raw chunks": (n, lambda: chunks_raw(raw, n, args.chunk)),
    }
    runs: dict[str, list[Run]] = {name: [] for name in sides}
    progress(
        f"(a, b) {args.reps} alternated runs per side: map of {n}, raw per-task {raw_n}, "
        f"raw chunks of {args.chunk} on {n}"
    )
    names = list(sides)
    for rep in range(args.reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate who goes first
        for name in order:
            runs[name].append(sides[name][1]())
        progress(
            f"  run {rep + 1}: "
            + ", ".join(f"{name} {sides[name][0] / runs[name][-1][1]:.0f}/s" for name in names)
        )
    rates = {name: rate(sides[name][0], runs[name]) for name in names}
    sent = {name: median([s for s, _ in runs[name]]) for name in names}

    def each(name: str) -> str:
        return ", ".join(f"{sides[name][0] / t:.0f}" for _, t in runs[name])

    progress(f"(c) {args.samples} interleaved one-call maps and submits")
    maps, submits = one_call(fe, args.samples)

    progress(f"(d) memory: starmap of {args.memory_n} in a fresh process")
    mem = memory(broker, args.memory_n, logs)
    # Peak growth: the high-water mark (reset just before the map) over the RSS then.
    grown = mem["after_hwm"] - mem["before_rss"]
    per_call = grown / mem["n"]
    sent_grown = mem["sent_hwm"] - mem["before_rss"]
    maxrss_grown = mem["after_maxrss"] - mem["before_maxrss"]

    chunks_ours = math.ceil(n / next(chunk_sizes(n, None)))  # the automatic size
    vs_task = rates["map"] / rates["raw per-task"]
    vs_chunks = rates["map"] / rates["raw chunks"]
    return [
        Row(
            f"(a) map of {n} vs {raw_n} delay()+get(), calls/s",
            f"{rates['map']:.0f}",
            f"{rates['raw per-task']:.0f}",
            f"{vs_task:.1f}x",
            f">= {MAP_TARGET:.0f}x",
            verdict(vs_task >= MAP_TARGET),
        ),
        Row(
            f"    each of {args.reps} runs, calls/s",
            each("map"),
            each("raw per-task"),
            "",
            "",
            "info",
        ),
        Row(
            f"    time to send, per call ({chunks_ours} chunks / {raw_n} tasks)",
            us(sent["map"] / n),
            us(sent["raw per-task"] / raw_n),
            f"{sent['map'] / n / (sent['raw per-task'] / raw_n):.2f}x",
            "",
            "info",
        ),
        Row(
            f"(b) map of {n} vs add.chunks(.., {args.chunk}), calls/s",
            f"{rates['map']:.0f}",
            f"{rates['raw chunks']:.0f}",
            f"{vs_chunks:.2f}x",
            f">= {CHUNKS_TARGET:.1f}x (stretch)",
            verdict(vs_chunks >= CHUNKS_TARGET),
        ),
        Row(
            f"    each of {args.reps} runs, calls/s",
            each("map"),
            each("raw chunks"),
            "",
            "",
            "info",
        ),
        Row(
            f"    map with chunksize={args.chunk}, calls/s",
            f"{rates['map chunksize']:.0f}",
            f"{rates['raw chunks']:.0f}",
            f"{rates['map chunksize'] / rates['raw chunks']:.2f}x",
            "",
            "info",
        ),
        Row(
            f"    time to send {n} ({chunks_ours} / {math.ceil(n / args.chunk)} chunks)",
            ms(sent["map"]),
            ms(sent["raw chunks"]),
            "",
            "",
            "info",
        ),
        *compared(
            f"(c) map of 1 call vs submit, median of {args.samples}",
            maps,
            submits,
            ONE_CALL_TARGET,
        ),
        Row(
            f"(d) peak RSS growth, starmap of {mem['n']}, B/call",
            f"{per_call:.0f}",
            "-",
            f"{grown / 2**20:.1f} MiB",
            f"<= {MEMORY_TARGET}",
            verdict(per_call <= MEMORY_TARGET and mem["calls"] == mem["n"] and mem["reset"]),
        ),
        Row(
            "    same, once starmap returned (before results)",
            f"{sent_grown / mem['n']:.0f}",
            "-",
            f"{sent_grown / 2**20:.1f} MiB",
            "",
            "info",
        ),
        Row(
            "    RSS before / returned / all in, MiB",
            " / ".join(f"{mem[k] / 2**20:.1f}" for k in ("before_rss", "sent_rss", "after_rss")),
            "-",
            "",
            "",
            "info",
        ),
        Row(
            "    ru_maxrss growth (masked: inherited), B/call",
            f"{maxrss_grown / mem['n']:.0f}",
            "-",
            f"from {mem['before_maxrss'] / 2**20:.0f} MiB",
            "",
            "info",
        ),
        Row(
            f"    starmap of {mem['n']}: returned / all in",
            f"{ms(mem['send_s'])} / {ms(mem['total_s'])}",
            "-",
            f"{mem['n'] / mem['total_s']:.0f} calls/s",
            "",
            "info",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
