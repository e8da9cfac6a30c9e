"""The supervisor of one application's local services.

It starts the services the plugins describe, waits until each reports ready, and stops
them: on ``celery.stop()``, at interpreter exit, and (through the lifeline of
:mod:`flask_execute.processes`) when this process dies in any other way.

Several processes of one application on one host (``gunicorn -w 3``, a reloader's
successive children) share one set of services: a file lock in ``CELERY_LOG_DIR``
elects the process that runs them. The others wait on the lock in a background thread
and take over when its holder exits.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from flask_execute import config_snapshot
from flask_execute.config import files_dir
from flask_execute.errors import ServiceError
from flask_execute.importing import refuse_unguarded, refuse_while_loading
from flask_execute.inspection import own_connection
from flask_execute.processes import ServiceProcess, stop_all
from flask_execute.services import Service

if TYPE_CHECKING:
    from flask_execute.runtime import AppState

logger = logging.getLogger("flask_execute")


def log_path(state: AppState, service: Service) -> Path:
    """``<CELERY_LOG_DIR>/<service name>.log``."""
    return files_dir(state.app) / f"{service.name}.log"


class ProcessSupervisor:
    """Starts, watches and stops the local services of one application
    (a :class:`flask_execute.services.Supervisor`).

    :param state: the application's record.
    """

    def __init__(self, state: AppState) -> None:
        self.state = state
        #: The services this process runs, by name.
        self.processes: dict[str, ServiceProcess] = {}
        self._lock = threading.RLock()
        self._host_lock: int | None = None
        self._waiting = False
        self._closing = False
        _SUPERVISORS.add(self)

    # -- what to run -------------------------------------------------------------------

    @property
    def timeout(self) -> float:
        """Seconds services get to be ready (``CELERY_START_TIMEOUT``)."""
        return float(self.state.app.config["CELERY_START_TIMEOUT"])

    @property
    def stop_timeout(self) -> float:
        """Seconds running tasks get to finish on a stop (``CELERY_STOP_TIMEOUT``)."""
        return float(self.state.app.config["CELERY_STOP_TIMEOUT"])

    def describe(self) -> list[Service]:
        """The services the plugins contribute for this application."""
        return self.state.pm.describe_services(self.state.app)

    def log_path(self, service: Service) -> Path:
        return log_path(self.state, service)

    def log_paths(self) -> dict[str, str]:
        """The log file of every described service, by name."""
        return {s.name: str(self.log_path(s)) for s in self.describe()}

    # -- starting ----------------------------------------------------------------------

    def autostart(self) -> None:
        """Start the services on the first send, if this process may."""
        config = self.state.app.config
        if self.state.in_worker or not config["CELERY_START_LOCAL_WORKERS"]:
            return
        refuse_unguarded(self.state.app.import_name, "submits work")
        # The result listener is needed next: set it up while the workers boot. Tasks
        # reach a worker through its queue, so its remote control need not answer yet.
        self.start(while_booting=self.state.futures.source, answer_control=False)

    def start(
        self,
        timeout: float | None = None,
        while_booting: Callable[[], object] | None = None,
        *,
        answer_control: bool = True,
    ) -> None:
        """Start every described service not yet running; wait until all are ready.

        :param while_booting: called after the services were spawned, before waiting for
            them; an exception it raises stops them.
        :param answer_control: also wait until every new worker answers a ping, so that
            ``status()``, ``inspect`` and ``control`` reach it at once.
        """
        refuse_while_loading("starts local services")
        refuse_unguarded(self.state.app.import_name, "starts local services")
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            self._closing = False
            services = self._missing()
            if not services:
                return
            if not self._take_host_lock():
                return  # another process of this app on this host runs them
            self._launch(services, timeout, while_booting)
            if answer_control:
                started = [s.node for s in services if s.node and s.name in self.processes]
                self._await_control(started, timeout)

    def _await_control(self, nodes: list[str], timeout: float) -> None:
        # A worker reports ready before its remote-control subscription is live, and a
        # broadcast sent in between is lost: ask until each one answers.
        conf = self.state.celery_app.conf
        if not nodes or not conf.worker_enable_remote_control:
            return
        control = self.state.celery_app.control
        missing = set(nodes)
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            # A ping that times out blocks its connection a while: never a pooled one.
            with own_connection(self.state.celery_app) as connection:
                replies = control.ping(
                    destination=sorted(missing),
                    timeout=0.1,
                    limit=len(missing),
                    connection=connection,
                )
            missing -= {name for reply in replies or () for name in reply}
        if missing:
            logger.warning(
                "%s started but did not answer remote control within %gs",
                ", ".join(sorted(missing)),
                timeout,
            )

    def running(self) -> dict[str, ServiceProcess]:
        """The services this process started that are still alive, by name."""
        return {name: proc for name, proc in self.processes.items() if proc.alive()}

    def _missing(self) -> list[Service]:
        running = self.running()
        return [s for s in self.describe() if s.name not in running]

    def _launch(
        self,
        services: list[Service],
        timeout: float,
        while_booting: Callable[[], object] | None = None,
    ) -> None:
        # Workers of these names may already run (started by hand, say): ask while ours
        # start, and tell them from ours by pid (a late question may reach ours too).
        deadline = time.monotonic() + timeout
        probe = _OnlineProbe(self.state, [s.node for s in services if s.node])
        started: list[tuple[Service, ServiceProcess]] = []
        snapshots: list[Path] = []
        try:
            for service in services:
                # This app's effective config, whatever way it was built (a factory
                # with overrides too): the service applies it when it loads the app.
                snapshots.append(config_snapshot.write(self.state.app))
                env = {**service.env, config_snapshot.SNAPSHOT_ENV: str(snapshots[-1])}
                service = replace(service, env=env)
                process = self.state.pm.spawn_service(self.state.app, service)
                self.processes[service.name] = process
                started.append((service, process))
            online = probe.result()
            duplicates = [
                (s, p) for s, p in started if s.node in online and online[s.node] != p.pid
            ]
            for service, process in duplicates:
                logger.info("worker %s is already running", service.node)
                self.processes.pop(service.name, None)
                started.remove((service, process))
            stop_all([p for _, p in duplicates], 5.0)
            if while_booting is not None:
                while_booting()
            self._wait_ready(started, timeout, deadline)
        except BaseException:
            stop_all([p for _, p in started], 5.0)
            for service, _ in started:
                self.processes.pop(service.name, None)
            if not self.processes:
                self._release_host_lock()
            raise
        finally:
            for path in snapshots:  # each service removed its own once read
                config_snapshot.remove(path)
        if started:
            logger.info(
                "started %s (logs in %s)",
                ", ".join(s.name for s, _ in started),
                files_dir(self.state.app),
            )

    def _wait_ready(
        self, started: list[tuple[Service, ServiceProcess]], timeout: float, deadline: float
    ) -> None:
        pm = self.state.pm
        pending = list(started)
        while pending:
            # Readiness counts only when seen in time (the duplicate check before this
            # may already have used the whole timeout).
            late = time.monotonic() > deadline
            for service, process in list(pending):
                if not process.alive():
                    raise _failure(service, process, f"exited with code {process.popen.returncode}")
                if late:
                    raise _failure(
                        service,
                        process,
                        f"was not ready within {timeout:g}s (raise CELERY_START_TIMEOUT if it "
                        "needs longer)",
                    )
                if pm.check_ready(self.state.app, service, process):
                    pending.remove((service, process))
            if pending:
                pending[0][1].signalled(0.02)  # wakes at once when the first reports ready

    # -- one set per host --------------------------------------------------------------

    def _lock_path(self) -> Path:
        conf = self.state.celery_app.conf
        key = f"{conf.broker_url}|{self.state.app.import_name}|{self.state.app.name}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return files_dir(self.state.app) / f"services-{digest}.lock"

    def _take_host_lock(self) -> bool:
        if self._host_lock is not None:
            return True
        path = self._lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            logger.info(
                "local services of this app are run by another process "
                "(lock %s); this one takes over if that one exits",
                path,
            )
            self._wait_for_host_lock(path)
            return False
        self._own(fd)
        return True

    def _own(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._host_lock = fd

    def _wait_for_host_lock(self, path: Path) -> None:
        if self._waiting:
            return
        self._waiting = True

        def take_over() -> None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._lock:
                self._waiting = False
                if self._closing or sys.is_finalizing() or self._host_lock is not None:
                    os.close(fd)
                    return
                self._own(fd)
                try:
                    self._launch(self._missing(), self.timeout)
                except Exception as exc:
                    logger.error("taking over local services failed: %s", exc)

        threading.Thread(target=take_over, name="flask_execute-services", daemon=True).start()

    def _release_host_lock(self) -> None:
        fd, self._host_lock = self._host_lock, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- stopping and status -----------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop every service this process started and give up the host lock.

        :param timeout: seconds running tasks get to finish (default
            ``CELERY_STOP_TIMEOUT``); see :func:`~flask_execute.processes.stop_all`.
        """
        with self._lock:
            self._closing = True
            processes = list(self.processes.values())
            self.processes.clear()
            stop_all(processes, self.stop_timeout if timeout is None else timeout)
            self._release_host_lock()
            self.state.reset_prepared()

    def _after_fork(self) -> None:
        # A forked child owns neither the services nor the lock: its copy of the lock's
        # descriptor must go, or the lock would outlive the parent.
        self.processes = {}
        self._release_host_lock()
        self._waiting = False
        self._lock = threading.RLock()


class _OnlineProbe:
    """Asks worker names for their stats from a thread; :meth:`result` maps the names
    that answered to their pids."""

    def __init__(self, state: AppState, nodes: list[str], timeout: float = 0.5) -> None:
        self._online: dict[str, int | None] = {}
        self._thread: threading.Thread | None = None
        if nodes:
            self._thread = threading.Thread(
                target=self._ask, args=(state, nodes, timeout), daemon=True
            )
            self._thread.start()

    def _ask(self, state: AppState, nodes: list[str], timeout: float) -> None:
        try:
            with own_connection(state.celery_app) as connection:
                inspect = state.celery_app.control.inspect(
                    destination=nodes, timeout=timeout, limit=len(nodes), connection=connection
                )
                replies = inspect.stats() or {}
        except Exception:  # an unreachable broker surfaces on the send itself
            return
        self._online = {node: (stats or {}).get("pid") for node, stats in replies.items()}

    def result(self) -> dict[str, int | None]:
        if self._thread is not None:
            self._thread.join()
        return self._online


def _failure(service: Service, process: ServiceProcess, what: str) -> ServiceError:
    tail = process.log_tail()
    return ServiceError(
        f"local {service.kind} {service.name!r} {what}; log: {process.log_path}"
        + (f"\n--- last lines of the log ---\n{tail}" if tail else "")
    )


_SUPERVISORS: weakref.WeakSet[ProcessSupervisor] = weakref.WeakSet()


@atexit.register
def _stop_at_exit() -> None:
    for supervisor in list(_SUPERVISORS):
        if supervisor.processes:
            with contextlib.suppress(Exception):
                supervisor.stop()


def _reset_after_fork() -> None:
    for supervisor in list(_SUPERVISORS):
        supervisor._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
