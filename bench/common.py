"""What the benchmarks share: a Redis database of their own, real worker processes,
timing statistics and the result table.

The Redis database is leased with the test suite's own protocol
(:func:`tests.helpers.allocate_redis_db`), so a benchmark never shares a database with
a test run or another benchmark, and never uses db 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# `python bench/core.py` puts bench/ first on sys.path; the shared helpers live in tests/.
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from tests import helpers  # noqa: E402

#: The environment variable both benchmark apps read their broker (and backend) from.
BROKER_ENV = "FLASK_EXECUTE_BENCH_BROKER"

#: Worker settings shared by both sides: the comparison holds them equal.
CONCURRENCY = 2
POOL = "prefork"
PREFETCH = 4


@contextlib.contextmanager
def redis_db() -> Iterator[str]:
    """Lease a free Redis database for this run; yield its URL; flush and free it."""
    db = helpers.allocate_redis_db()
    try:
        yield f"redis://{helpers.REDIS_HOST}:{helpers.REDIS_PORT}/{db}"
    finally:
        helpers.release_redis_db(db)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop the workers."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def bench_env(broker: str, **extra: str) -> dict[str, str]:
    """Environment of a benchmark subprocess: bench/ and the repo importable."""
    env = helpers.test_env(**{BROKER_ENV: broker}, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
    return env


def worker_argv(app: str, queue: str, name: str) -> list[str]:
    """A plain ``celery worker`` command line with the shared settings."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-l",
        "warning",
        "-P",
        POOL,
        "-c",
        str(CONCURRENCY),
        "--prefetch-multiplier",
        str(PREFETCH),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-Q",
        queue,
        "-n",
        name,
    ]


@dataclass
class Worker:
    """A worker subprocess and what is needed to check on it."""

    proc: subprocess.Popen[bytes]
    name: str
    log: Path

    def wait_ready(self, celery_app: Any, timeout: float = 60) -> None:
        """Wait until this worker answers ``ping``; fail with its log."""
        prefix = self.name.split("@")[0] + "@"

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker {self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            replies = celery_app.control.ping(timeout=0.3) or []
            return any(n.startswith(prefix) for r in replies for n in r)

        try:
            helpers.wait_for(ready, timeout=timeout, interval=0.05, message=f"{self.name} ping")
        except AssertionError:
            raise RuntimeError(f"worker {self.name} not ready:\n{self.tail()}") from None

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        helpers.stop_process_tree(self.proc)


def start_worker(
    app: str, queue: str, broker: str, log_dir: Path, *, extra_env: dict[str, str] | None = None
) -> Worker:
    """Start a real ``celery worker`` subprocess (``sys.executable -m celery``)."""
    name = f"{queue}-{uuid.uuid4().hex[:6]}@%h"
    log = log_dir / f"{queue}.log"
    env = bench_env(broker, **(extra_env or {}))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            worker_argv(app, queue, name),
            env=env,
            cwd=BENCH,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return Worker(proc, name, log)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark dies without cleaning up
    (killed, or a watchdog's hard exit), so no worker outlives it (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def leftover_processes() -> list[str]:
    """Processes started by this run (by environment marker) still alive."""
    return [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in helpers.marked_processes()]


def timed(fn: Callable[[], Any], n: int, clock: Callable[[], float]) -> list[float]:
    """Call ``fn`` ``n`` times and return each call's duration in seconds."""
    samples = []
    for _ in range(n):
        start = clock()
        fn()
        samples.append(clock() - start)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    """One line of the result table."""

    what: str
    ours: str
    raw: str
    ratio: str
    target: str
    verdict: str


def print_table(title: str, rows: list[Row]) -> None:
    header = Row("measure", "flask_execute", "baseline", "ratio", "target", "result")
    cells = [header, *rows]
    widths = [max(len(getattr(r, f)) for r in cells) for f in Row.__dataclass_fields__]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print(line)
    for i, row in enumerate(cells):
        values = [getattr(row, f) for f in Row.__dataclass_fields__]
        print("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip())
        if i == 0:
            print(line)
    print(line)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us"


def progress(message: str) -> None:
    """One line on stderr per phase: a stuck run shows where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def both_sides(broker: str, tmp: Path) -> Iterator[tuple[Any, Any]]:
    """Import ``fe_app`` and ``raw_app`` on ``broker`` and run one ready worker per side
    (same settings, own queues) for the block; stop them, and our result listener, at
    its end whatever happens. Yields the two modules."""
    import importlib

    os.environ[BROKER_ENV] = broker  # read by both apps at import
    fe = importlib.import_module("fe_app")
    raw = importlib.import_module("raw_app")
    print(
        f"broker {broker}; one worker per side: pool={POOL} concurrency={CONCURRENCY} "
        f"prefetch-multiplier={PREFETCH}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}"
    )
    workers: list[Worker] = []
    try:
        workers.append(start_worker("raw_app", raw.QUEUE, broker, tmp))
        extra = {"FLASK_APP": "fe_app:app"}
        workers.append(start_worker("flask_execute.celery", fe.QUEUE, broker, tmp, extra_env=extra))
        progress("starting one worker per side")
        workers[0].wait_ready(raw.app)
        workers[1].wait_ready(fe.celery.celery_app)
        yield fe, raw
    finally:
        for worker in workers:
            worker.stop()
        fe.app.extensions["flask_execute"].futures.close()


def compared(label: str, ours: list[float], theirs: list[float], target: float) -> list[Row]:
    """Two rows: the medians of ``ours`` and ``theirs`` (seconds), PASS when ours is at
    most ``target`` times theirs, and their 90th percentiles for information."""
    ratio = median(ours) / median(theirs)
    high = quantile(ours, 0.9) / quantile(theirs, 0.9)
    return [
        Row(
            label,
            ms(median(ours)),
            ms(median(theirs)),
            f"{ratio:.2f}x",
            f"<= {target:.2f}x",
            verdict(ratio <= target),
        ),
        Row(
            "    same, 90th percentile",
            ms(quantile(ours, 0.9)),
            ms(quantile(theirs, 0.9)),
            f"{high:.2f}x",
            "",
            "info",
        ),
    ]


def run_both_sides(title: str, measure: Callable[[Any, Any, Path], list[Row]]) -> int:
    """The body of a benchmark's ``main``: lease a Redis database, run one worker per
    side, ``measure(fe, raw, tmp)``, print its rows under ``title``, and report what
    was left running and the wall time."""
    import shlex
    import tempfile

    started = time.perf_counter()
    with terminate_on_sigterm(), redis_db() as broker, tempfile.TemporaryDirectory() as tmp:
        print(f"command: {shlex.join([sys.executable, *sys.argv])}")
        with both_sides(broker, Path(tmp)) as (fe, raw):
            rows = measure(fe, raw, Path(tmp))
    print_table(title, rows)
    left = leftover_processes()
    print(f"processes left behind: {left or 'none'}")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0
