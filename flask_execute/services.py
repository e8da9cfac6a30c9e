"""Local services (workers, flower, beat): what they are, and the extension's methods.

Plugins describe services with :class:`Service` (hook
:func:`~flask_execute.hookspecs.flask_execute_local_services`); the
:class:`~flask_execute.supervisor.Supervisor` of each application starts, watches and
stops them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask_execute.runtime import AppState


@dataclass
class Service:
    """A local service to run: one ``celery`` command line.

    :param name: unique within the application; names the log file
        (``<CELERY_LOG_DIR>/<name>.log``) and the keys of ``celery.processes``.
    :param kind: ``"worker"``, ``"flower"``, ``"beat"`` or a plugin's own kind.
    :param argv: the Celery subcommand and its options (``["worker", "-n", ...]``);
        ``-A flask_execute.celery`` is put in front by the core.
    :param node: a worker's node name (``foo@host``): a worker of that name already
        answering is not started again.
    :param env: extra environment variables for the process.
    :param address: ``(host, port)`` the service listens on, if any.
    """

    name: str
    kind: str
    argv: list[str]
    node: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    address: tuple[str, int] | None = None


class ServicesMixin:
    """Extension methods for the application's local services."""

    def state(self) -> AppState:  # pragma: no cover - provided by the extension
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> None:
        """Start every configured local service and return when all are ready.

        Workers of ``CELERY_WORKERS``, flower when ``CELERY_FLOWER``, beat when
        ``CELERY_SCHEDULER`` and a schedule exists; unlike the start on first
        ``submit()``, this ignores ``CELERY_START_LOCAL_WORKERS``. Services already
        running are left as they are.

        :param timeout: seconds to wait for readiness (default ``CELERY_START_TIMEOUT``).
        :raises ServiceError: a service exited or was not ready in time; the message
            names it, its log file and its last log lines. Nothing is left running.
        """
        from flask_execute.supervisor import Supervisor

        Supervisor.of(self.state()).start(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop every local service this process started.

        :param timeout: seconds they get to exit after SIGTERM before SIGKILL
            (default ``CELERY_START_TIMEOUT``).
        """
        from flask_execute.supervisor import Supervisor

        Supervisor.of(self.state()).stop(timeout)

    def status(self, timeout: float = 1.0) -> dict[str, str]:
        """Ping the workers in-process: ``{"foo@host": "OK", ...}``.

        Configured workers that do not answer within ``timeout`` are ``"OFFLINE"``;
        the call returns as soon as every configured worker answered.
        """
        from flask_execute.supervisor import Supervisor

        return Supervisor.of(self.state()).status(timeout)

    @property
    def processes(self) -> dict[str, int]:
        """The running local services of this process: name -> pid."""
        from flask_execute.supervisor import Supervisor

        return {name: proc.pid for name, proc in Supervisor.of(self.state()).running().items()}

    @property
    def logs(self) -> dict[str, str]:
        """The log file of every configured local service: name -> path."""
        from flask_execute.supervisor import Supervisor

        supervisor = Supervisor.of(self.state())
        return {s.name: str(supervisor.log_path(s)) for s in supervisor.describe()}
