"""Memory of one big map, flask_execute side: run as a fresh interpreter by ``bulk.py``.

Imports ``fe_app`` (its worker is already running, started by ``bulk.py``), warms up
with a small map (imports done, result listener started), then measures the peak
resident set size from just before ``celery.starmap(add, <generator of N calls>)`` until
every result is in. A fresh process, so that nothing an earlier phase allocated hides
the peak. Prints one JSON line on stdout.

The peak is the kernel's high-water mark of this process's memory (``VmHWM``), reset
to the current size (``/proc/self/clear_refs``) just before the map, so that neither
the import's transient allocations nor the parent's size count. ``ru_maxrss`` is read
too, but only reported: on Linux it starts as the RSS of the process that forked this
one (``bulk.py``, some 60 MiB and more), and so hides any growth below that.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time

import fe_app


def ru_maxrss() -> int:
    """``getrusage`` peak resident set size, in bytes (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def status(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``), in bytes."""
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def reset_peak() -> bool:
    """Reset this process's high-water mark to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="calls in the map")
    parser.add_argument("--warmup", type=int, default=100, help="calls in the warm-up map")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    celery, add, n = fe_app.celery, fe_app.add, args.n
    try:
        warm = celery.starmap(add, ((i, i) for i in range(args.warmup)))
        assert sum(warm.result(timeout=args.timeout)) == args.warmup * (args.warmup - 1)
        del warm
        gc.collect()
        report: dict[str, object] = {"n": n, "reset": reset_peak()}

        def read(when: str) -> None:
            report[f"{when}_rss"] = status("VmRSS")
            report[f"{when}_hwm"] = status("VmHWM")
            report[f"{when}_maxrss"] = ru_maxrss()

        read("before")
        start = time.perf_counter()
        pool = celery.starmap(add, ((i, i) for i in range(n)))
        sent = time.perf_counter()
        read("sent")
        total = sum(pool.result(timeout=args.timeout))
        end = time.perf_counter()
        read("after")
        assert total == n * (n - 1), total
        report.update(calls=len(pool), send_s=sent - start, total_s=end - start)
        print(json.dumps(report), flush=True)
    finally:
        fe_app.app.extensions["flask_execute"].futures.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
