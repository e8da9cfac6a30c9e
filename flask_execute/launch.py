"""The first code a local service runs: ``python -m flask_execute.launch``.

Usage (by :mod:`flask_execute.processes`, never by hand)::

    python -m flask_execute.launch LIFELINE_FD READY_FD TIMEOUT COLD -- <celery arguments>

Before handing over to Celery's own command line in this very process (which so is the
Celery main process), it

* watches the *lifeline*: the read end of a pipe whose write end only the Flask process
  holds. When that process dies, however hard (SIGKILL included), the pipe reports
  end-of-file and the service stops itself in the stages of
  :func:`flask_execute.processes.stop_all`: SIGTERM to this process (a worker's warm
  shutdown: running tasks finish), after ``TIMEOUT`` seconds SIGQUIT (a worker's cold
  shutdown: ``acks_late`` tasks go back to the queue) unless ``COLD`` is ``-``, and
  after ``COLD`` more seconds SIGKILL to the whole process group;
* reports readiness: on Celery's ``worker_ready`` or ``beat_init`` signal one byte is
  written to ``READY_FD``, so the Flask process knows at once, with no polling of the
  broker, that the service is serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any


def _watch_lifeline(fd: int, timeout: float, cold: float | None) -> None:
    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 64):
                    break
            except InterruptedError:  # pragma: no cover - retried by Python itself
                continue
            except OSError:
                break
        # The Flask process is gone: nobody else will stop us. Each signal goes to the
        # main thread, where Celery's handlers run and its event loop waits; this
        # thread ends with the process, whichever stage finishes it.
        main = threading.main_thread().ident
        assert main is not None
        with contextlib.suppress(ProcessLookupError):  # the main thread already ended
            signal.pthread_kill(main, signal.SIGTERM)
        time.sleep(timeout)
        if cold is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pthread_kill(main, signal.SIGQUIT)
            time.sleep(cold)
        os.killpg(os.getpgid(0), signal.SIGKILL)

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
    if len(args) < 5 or args[4] != "--":
        raise SystemExit(
            "usage: python -m flask_execute.launch LIFELINE READY TIMEOUT COLD -- ARGS"
        )
    lifeline, ready, timeout = int(args[0]), int(args[1]), float(args[2])
    cold = None if args[3] == "-" else float(args[3])
    if lifeline >= 0:
        _watch_lifeline(lifeline, timeout, cold)
    if ready >= 0:
        _report_ready(ready)
    sys.argv = ["celery", *args[5:]]
    from celery.__main__ import main as celery_main

    celery_main()


if __name__ == "__main__":
    main()
