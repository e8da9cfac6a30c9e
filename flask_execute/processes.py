"""Processes of local services: spawned in their own group, tied to this process.

Every service runs ``sys.executable -m flask_execute.launch ... -- <celery args>`` (the
running interpreter, never a ``celery`` found on ``PATH``) in a new session, whose
*main process* is the Celery main process itself (launch runs Celery's command line
in-process). Stopping one is graceful first, in Celery's own stages:

1. *warm*: SIGTERM to the main process only. A worker stops taking messages, lets its
   running tasks finish and gives the prefetched ones back to the broker; beat saves its
   schedule; flower stops serving.
2. *cold* (workers only), when the stop timeout expired: SIGQUIT to the main process.
   Celery cancels the tasks still running; an ``acks_late`` task's message is not
   acknowledged, and goes back to the queue when the worker closes its connection.
3. *kill*: SIGKILL to the whole group, after a short grace, or at once when the main
   process is gone but a child of it lingers.

A *lifeline* pipe, one per Flask process, runs the same stages from inside the service
when this process dies, even by SIGKILL (see :mod:`flask_execute.launch`).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Seconds a worker gets after SIGQUIT (its cold shutdown) to cancel its tasks and give
#: their messages back to the broker before its group is killed.
COLD_GRACE = 3.0

_lifeline: tuple[int, int] | None = None
_lifeline_lock = threading.Lock()


def lifeline_fd() -> int:
    """The read end of this process's lifeline pipe (created on first use).

    The write end stays open, and unused, for the life of this process; forked
    children close their inherited copy so that only this process keeps services alive.
    """
    global _lifeline
    with _lifeline_lock:
        if _lifeline is None:
            _lifeline = os.pipe()  # both ends close on exec: only pass_fds shares one
        return _lifeline[0]


def _forget_lifeline_in_child() -> None:
    global _lifeline
    if _lifeline is not None:
        for fd in _lifeline:
            with contextlib.suppress(OSError):
                os.close(fd)
        _lifeline = None


os.register_at_fork(after_in_child=_forget_lifeline_in_child)


class ServiceProcess:
    """A running local service.

    :param name: the service's name.
    :param popen: its process (the Celery main process, leader of its own group).
    :param log_path: the file its output goes to.
    :param ready_fd: read end of the pipe the service writes one byte to when ready.
    :param kind: the service's kind (``"worker"``, ``"flower"``, ``"beat"`` ...).
    :param cold_grace: seconds between the cold shutdown (SIGQUIT to the main process)
        and the kill; ``None``: the service has no cold shutdown, it is killed when
        the warm one times out.
    """

    def __init__(
        self,
        name: str,
        popen: subprocess.Popen[bytes],
        log_path: Path,
        ready_fd: int,
        *,
        kind: str = "service",
        cold_grace: float | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self.cold_grace = cold_grace
        self._ready_fd: int | None = ready_fd
        self._signalled = False
        self._cold = False

    def __repr__(self) -> str:
        return f"<ServiceProcess {self.name} pid={self.pid}>"

    def alive(self) -> bool:
        """Whether the service's main process is still running."""
        return self.popen.poll() is None

    def signalled(self, timeout: float = 0.0) -> bool:
        """Whether the service reported itself ready (waiting up to ``timeout``)."""
        if self._signalled or self._ready_fd is None:
            return self._signalled
        readable, _, _ = select.select([self._ready_fd], [], [], timeout)
        if readable:
            self._signalled = os.read(self._ready_fd, 1) == b"1"
            self._close_ready()
        return self._signalled

    def _close_ready(self) -> None:
        fd, self._ready_fd = self._ready_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def warm_shutdown(self) -> None:
        """SIGTERM to the main process only: a worker finishes its running tasks and
        gives its prefetched messages back (its pool children are left to it)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def cold_shutdown(self) -> bool:
        """SIGQUIT to the main process of a service that has a cold shutdown (a
        worker: its running tasks are cancelled, ``acks_late`` ones go back to the
        queue). ``False``, and nothing sent, for a service without one.

        Sent once: a second SIGQUIT would make Celery skip the rest of its shutdown.
        """
        if self.cold_grace is None or not self.alive():
            return False
        if not self._cold:
            self._cold = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGQUIT)
        return True

    def kill(self) -> None:
        """Send SIGKILL to the service's whole process group."""
        # The group id is the pid (new session); it outlives the main process while any
        # pool child lives, so the group is signalled even after the main one exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def group_alive(self) -> bool:
        """Whether any process of the service's group is still running."""
        self.popen.poll()  # reap the main process if it exited
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - not ours any more
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """Wait until the whole group has exited; ``True`` if it did in time.

        What is left of the group once its main process exited is killed at once.
        """
        return not _wait([self], timeout)

    def stop(self, timeout: float) -> None:
        """Stop the service: warm, cold after ``timeout``, then killed (:func:`stop_all`)."""
        stop_all([self], timeout)

    def close(self) -> None:
        """Release this handle's file descriptors (the process must be gone)."""
        self._close_ready()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the service's log."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                text = fh.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(
    name: str,
    celery_args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str],
    cwd: str | None = None,
    kind: str = "service",
    stop_timeout: float = 10.0,
    cold_grace: float | None = None,
) -> ServiceProcess:
    """Start ``celery <celery_args>`` as a local service in its own process group.

    :param stop_timeout: seconds its running work gets if this process dies (the
        lifeline's warm stage, as :func:`stop_all`'s ``timeout``).
    :param cold_grace: see :class:`ServiceProcess`; :data:`COLD_GRACE` suits a worker.
    """
    lifeline = lifeline_fd()
    ready_r, ready_w = os.pipe()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "flask_execute.launch",
        str(lifeline),
        str(ready_w),
        str(stop_timeout),
        "-" if cold_grace is None else str(cold_grace),
        "--",
        *celery_args,
    ]
    try:
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                pass_fds=(lifeline, ready_w),
            )
    except BaseException:
        os.close(ready_r)
        raise
    finally:
        os.close(ready_w)  # the child's copy is the only writer: EOF means it died
    return ServiceProcess(name, popen, log_path, ready_r, kind=kind, cold_grace=cold_grace)


def stop_all(processes: Sequence[ServiceProcess], timeout: float) -> None:
    """Stop services together, each as gracefully as it can in the time given.

    Warm shutdown for all; after ``timeout``, the cold shutdown of those still running
    that have one, and after their ``cold_grace`` (at once for the others) SIGKILL to
    every group left. So this returns within ``timeout`` plus the longest cold grace.
    """
    for process in processes:
        process.warm_shutdown()
    left = _wait(processes, timeout)
    cold = [process for process in left if process.cold_shutdown()]
    for process in left:
        if process not in cold:
            process.kill()
    grace = max((process.cold_grace or 0.0 for process in cold), default=0.0)
    for process in _wait(cold, grace):
        process.kill()
    _wait(left, 5.0)
    for process in processes:
        process.close()


def _wait(processes: Sequence[ServiceProcess], timeout: float) -> list[ServiceProcess]:
    """Wait up to ``timeout`` for the groups to exit; return those still running.

    A group whose main process exited is killed at once: what is left of it (a pool
    child stuck in a task) has nobody to stop it gracefully any more.
    """
    deadline = time.monotonic() + timeout
    pending = list(processes)
    while True:
        for process in pending:
            if not process.alive():
                process.kill()
        pending = [process for process in pending if process.group_alive()]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.02)
