"""Local services (workers, flower, beat): what plugins describe and what runs them.

Plugins describe services with :class:`Service` (hook
:func:`~flask_execute.hookspecs.flask_execute_describe_services`); the application's
:class:`Supervisor` (hook :func:`~flask_execute.hookspecs.flask_execute_make_supervisor`,
answered by the default ``services`` plugin) starts, watches and stops them. Each runs
as a :class:`~flask_execute.processes.ServiceProcess`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from flask_execute.processes import ServiceProcess

__all__ = ["Service", "ServiceProcess", "Supervisor"]


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


class Supervisor(Protocol):
    """Starts, watches and stops the local services of one application."""

    def start(self, timeout: float | None = None) -> None:
        """Start every described service not yet running; return when all are ready.

        :raises ~flask_execute.ServiceError: a service exited or was not ready in time.
        """

    def stop(self, timeout: float | None = None) -> None:
        """Stop every service this process started."""

    def running(self) -> Mapping[str, ServiceProcess]:
        """The services this process started that are still alive, by name."""

    def log_paths(self) -> dict[str, str]:
        """The log file of every described service, by name."""
