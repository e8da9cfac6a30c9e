"""Processes of local services: spawned in their own group, tied to this process.

Every service runs ``sys.executable -m flask_execute.launch ... -- <celery args>`` (the
running interpreter, never a ``celery`` found on ``PATH``) in a new session, so that
stopping it means signalling one process group: the Celery main process and its pool
children together. A *lifeline* pipe, one per Flask process, ends every service when
this process dies, even by SIGKILL (see :mod:`flask_execute.launch`).
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

#: Seconds a service whose Flask process died gets between SIGTERM and SIGKILL.
ORPHAN_GRACE = 2.0

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
    :param popen: its process.
    :param log_path: the file its output goes to.
    :param ready_fd: read end of the pipe the service writes one byte to when ready.
    """

    def __init__(
        self, name: str, popen: subprocess.Popen[bytes], log_path: Path, ready_fd: int
    ) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self._ready_fd: int | None = ready_fd
        self._signalled = False

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

    def terminate(self) -> None:
        """Send SIGTERM to the service's whole process group."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL to the service's whole process group."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        # The group id is the pid (new session); it outlives the main process while any
        # pool child lives, so the group is signalled even after the main one exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

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
        """Wait until the whole group has exited; ``True`` if it did in time."""
        deadline = time.monotonic() + timeout
        while self.group_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

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
) -> ServiceProcess:
    """Start ``celery <celery_args>`` as a local service in its own process group."""
    lifeline = lifeline_fd()
    ready_r, ready_w = os.pipe()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "flask_execute.launch",
        str(lifeline),
        str(ready_w),
        str(ORPHAN_GRACE),
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
    return ServiceProcess(name, popen, log_path, ready_r)


def stop_all(processes: Sequence[ServiceProcess], timeout: float) -> None:
    """SIGTERM every group, wait up to ``timeout`` in total, then SIGKILL what is left."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        if not process.wait(max(0.0, deadline - time.monotonic())):
            process.kill()
            process.wait(5)
        process.close()
