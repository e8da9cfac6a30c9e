"""Cold start, raw Celery side: run as a fresh interpreter by ``cold_start.py``.

Spawns a plain ``celery worker`` for ``raw_app`` and sends it the registered ``add``
task right away; prints the time of the result as one JSON line (from this module's
start), then stops the worker.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from raw_app import add, app  # noqa: E402

INITIALISED = time.perf_counter()

import os  # noqa: E402

#: ``COLD_RAW_FLAGS=ours``: the flags of flask_execute's local workers (mingle and gossip
#: off); otherwise a plain ``celery worker`` with Celery's defaults, as a user types it.
WORKER = ["worker", "-l", "info"]
if os.environ.get("COLD_RAW_FLAGS") == "ours":
    WORKER += ["--without-mingle", "--without-gossip"]


def _die_with_parent() -> None:
    # The worker must not outlive this process, even if it is killed.
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main() -> None:
    log = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "raw_app", *WORKER, "-n", "cold_raw@%h"],
        cwd=Path(__file__).parent,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        result = add.delay(1, 2).get(timeout=60)
        first = time.perf_counter()
        report = {"result": result, "init": INITIALISED - STARTED, "first": first - STARTED}
        print(json.dumps({"event": "result", **report}), flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        app.close()


if __name__ == "__main__":
    main()
