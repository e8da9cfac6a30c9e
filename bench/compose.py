"""Benchmark of futures as arguments (issue 12), against raw Celery in the same run.

In one run, on one leased Redis database, with one real ``celery worker`` per side:

(a) a dependent call, ``celery.submit(add, celery.submit(add, 1, 1), 1)``, from the
    first submit to the second result, against the same two calls submitted one after
    the other by the web process (``submit(add, submit(add, 1, 1).result(), 1)``) and
    against raw Celery's canvas, ``chain(add.s(1, 1), add.s(1))``;
(b) a chain of N dependent calls (1,000 by default), from the first submit to the last
    result, against raw Celery's ``chain`` of as many ``add`` signatures.

Prints a table of ratios; issue 12 sets no target for them, it asks for the figures.
Exits non-zero only if something broke.

    .venv/bin/python bench/compose.py [--samples 100] [--chain 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from types import ModuleType

from celery import chain
from common import (
    Row,
    compared,
    ms,
    progress,
    run_both_sides,
    timed,
)

TIMEOUT = 300.0


def dependent(fe: ModuleType, raw: ModuleType, samples: int) -> list[Row]:
    celery, add = fe.celery, fe.add

    def ours() -> None:
        assert celery.submit(add, celery.submit(add, 1, 1), 1).result(timeout=TIMEOUT) == 3

    def sequential() -> None:
        first = celery.submit(add, 1, 1).result(timeout=TIMEOUT)
        assert celery.submit(add, first, 1).result(timeout=TIMEOUT) == 3

    def canvas() -> None:
        assert chain(raw.add.s(1, 1), raw.add.s(1)).delay().get(timeout=TIMEOUT) == 3

    progress(f"(a) {samples} dependent calls, ours, sequential and raw canvas")
    for fn in (ours, sequential, canvas):  # warm each path once
        fn()
    clock = time.perf_counter
    ours_s, seq_s, raw_s = (timed(fn, samples, clock) for fn in (ours, sequential, canvas))
    # Issue 12 sets no target for these: reported (a ratio of 1.0 is the reference line).
    rows = compared("(a) dependent call vs two sequential submits", ours_s, seq_s, 1.0)
    rows += compared("(a) dependent call vs raw Celery chain of 2", ours_s, raw_s, 1.0)
    for row in rows:
        row.target, row.verdict = "report", "info"
    return rows


def long_chain(fe: ModuleType, raw: ModuleType, n: int) -> list[Row]:
    celery, add = fe.celery, fe.add
    progress(f"(b) a chain of {n:,} calls, ours")
    start = time.perf_counter()
    future = celery.submit(add, 0, 0)
    for _ in range(n):
        future = celery.submit(add, future, 1)
    submitted = time.perf_counter() - start
    assert future.result(timeout=TIMEOUT) == n
    ours = time.perf_counter() - start
    progress(f"(b) a chain of {n:,} calls, raw Celery")
    start = time.perf_counter()
    result = chain(raw.add.s(0, 0), *[raw.add.s(1) for _ in range(n)]).delay()
    assert result.get(timeout=TIMEOUT) == n
    theirs = time.perf_counter() - start
    return [
        Row(
            f"(b) chain of {n:,}: first submit to last result",
            f"{ours:.2f} s",
            f"{theirs:.2f} s",
            f"{ours / theirs:.2f}x",
            "report",
            "info",
        ),
        Row(
            f"    of which submitting the {n + 1:,} calls", f"{submitted:.2f} s", "", "", "", "info"
        ),
        Row("    per link", ms(ours / (n + 1)), ms(theirs / (n + 1)), "", "", "info"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=100, help="dependent calls timed (a)")
    parser.add_argument("--chain", type=int, default=1000, help="length of the chain (b)")
    args = parser.parse_args(argv)
    return run_both_sides(
        "futures as arguments (bench/compose.py)",
        lambda fe, raw, _: dependent(fe, raw, args.samples) + long_chain(fe, raw, args.chain),
    )


if __name__ == "__main__":
    sys.exit(main())
