"""Local services (workers, flower, beat): descriptions, processes, and the extension
methods that manage them. (Filled in by the local-services work, issue 3.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Service:
    """A local service to run: a ``celery`` subcommand with its arguments."""

    name: str
    kind: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


class ServiceProcess:
    """A running service process."""

    pid: int


class ServicesMixin:
    """Extension methods for local services: start, stop, status, inspect, control."""

    def _services_placeholder(self) -> Any:  # pragma: no cover
        return None
