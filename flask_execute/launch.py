"""The first code a local service runs: ``python -m flask_execute.launch``.

Usage (by :mod:`flask_execute.processes`, never by hand)::

    python -m flask_execute.launch LIFELINE_FD READY_FD GRACE -- <celery arguments>

Before handing over to Celery's own command line in this very process, it

* watches the *lifeline*: the read end of a pipe whose write end only the Flask process
  holds. When that process dies, however hard (SIGKILL included), the pipe reports
  end-of-file and the whole process group of the service (the Celery main process and
  its pool children) gets SIGTERM, then SIGKILL after ``GRACE`` seconds;
* reports readiness: on Celery's ``worker_ready`` or ``beat_init`` signal one byte is
  written to ``READY_FD``, so the Flask process knows at once, with no polling of the
  broker, that the service is serving.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any


def _watch_lifeline(fd: int, grace: float) -> None:
    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 64):
                    break
            except InterruptedError:  # pragma: no cover - retried by Python itself
                continue
            except OSError:
                break
        # The Flask process is gone: nobody else will stop us.
        group = os.getpgid(0)
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(group, signal.SIGKILL)

    threading.Thread(target=watch, name="flask_execute-lifeline", daemon=True).start()


def _report_ready(fd: int) -> None:
    from celery import signals

    sent = threading.Lock()

    def ready(**_kwargs: Any) -> None:
        if sent.acquire(blocking=False):
            try:
                os.write(fd, b"1")
                os.close(fd)
            except OSError:  # the Flask process stopped listening: nothing to tell
                pass

    signals.worker_ready.connect(ready, weak=False)
    signals.beat_init.connect(ready, weak=False)


def main(argv: list[str] | None = None) -> None:
    """Set up the lifeline and the ready signal, then run Celery's command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[3] != "--":
        raise SystemExit("usage: python -m flask_execute.launch LIFELINE READY GRACE -- ARGS")
    lifeline, ready, grace = int(args[0]), int(args[1]), float(args[2])
    if lifeline >= 0:
        _watch_lifeline(lifeline, grace)
    if ready >= 0:
        _report_ready(ready)
    sys.argv = ["celery", *args[4:]]
    from celery.__main__ import main as celery_main

    celery_main()


if __name__ == "__main__":
    main()
