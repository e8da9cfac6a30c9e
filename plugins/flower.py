"""Default plugin ``flower``: the Flower monitor beside the local workers.

Started with the other services when ``CELERY_FLOWER`` is on, listening on
``CELERY_FLOWER_ADDRESS:CELERY_FLOWER_PORT``; ready when its port accepts connections.
A flower already answering there (another process's) is left to serve, and logged as
running; a missing flower install, or a port something else holds, is a warning that
names the key, and the workers start without flower. A process that never starts
services (a worker, ``flask celery status``) describes flower without probing its port.
Local workers send task events for it (``--task-events``), and ``flask celery flower``
gets the same address and port.

Blocked, flower is off and local workers send no task events.
"""

from __future__ import annotations

import http.client
import importlib.util
import logging
import socket
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

from flask_execute.errors import ConfigurationError
from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState
from flask_execute.services import Service

if TYPE_CHECKING:
    from flask import Flask

    from flask_execute.processes import ServiceProcess

logger = logging.getLogger("flask_execute")

KEYS: dict[str, Any] = {
    # Start flower with the local workers.
    "CELERY_FLOWER": True,
    # Port and address of the local flower.
    "CELERY_FLOWER_PORT": 5555,
    "CELERY_FLOWER_ADDRESS": "127.0.0.1",
}


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(config: Mapping[str, Any]) -> None:
    port = config["CELERY_FLOWER_PORT"]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(f"CELERY_FLOWER_PORT must be a port number, not {port!r}")
    if not isinstance(config["CELERY_FLOWER_ADDRESS"], str):
        raise ConfigurationError("CELERY_FLOWER_ADDRESS must be a host name or IP address")


def port_taken(address: str, port: int) -> bool:
    """Whether something already listens on ``address:port``."""
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((address, port)) == 0


def flower_answers(address: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a flower serves ``address:port`` (its ``/healthcheck`` says ``OK``)."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", "/healthcheck")
        reply = connection.getresponse()
        return reply.status == 200 and reply.read(16) == b"OK"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@hookimpl
def flask_execute_describe_services(app: Flask) -> list[Service]:
    config = app.config
    state = AppState.of(app)
    if not config["CELERY_FLOWER"]:
        return []
    if importlib.util.find_spec("flower") is None:
        _say_once(
            state,
            logging.WARNING,
            "CELERY_FLOWER is on but flower is not installed: "
            "pip install flower, or set CELERY_FLOWER = False",
        )
        return []
    address, port = str(config["CELERY_FLOWER_ADDRESS"]), int(config["CELERY_FLOWER_PORT"])
    supervisor = state.supervisor
    ours = supervisor is not None and "flower" in supervisor.running()
    if not ours and not state.in_worker and port_taken(address, port):
        if flower_answers(address, port):
            _say_once(state, logging.INFO, f"flower is running at {address}:{port}")
        else:
            _say_once(
                state,
                logging.WARNING,
                f"flower not started: {address}:{port} is taken; set "
                "CELERY_FLOWER_PORT to a free port, or CELERY_FLOWER = False",
            )
        return []
    argv = ["flower", f"--port={port}", f"--address={address}"]
    return [Service("flower", "flower", argv, address=(address, port))]


def _say_once(state: AppState, level: int, message: str) -> None:
    # The services are described again by status() and celery.logs: say it once.
    said: set[str] = state.plugin_data.setdefault("flower", set())
    if message not in said:
        said.add(message)
        logger.log(level, message)


@hookimpl(wrapper=True, specname="flask_execute_describe_services")
def task_events_for_flower(app: Flask) -> Generator[None, list[list[Service]], Any]:
    # The workers plugin describes workers; flower needs their task events.
    answers = yield
    if app.config["CELERY_FLOWER"]:
        for service in (s for answer in answers for s in answer if s.kind == "worker"):
            if "--task-events" not in service.argv and "-E" not in service.argv:
                service.argv.append("--task-events")
    return answers


@hookimpl
def flask_execute_add_command_defaults(app: Flask) -> Mapping[str, Mapping[str, Any]]:
    config = app.config
    return {
        "flower": {"port": config["CELERY_FLOWER_PORT"], "address": config["CELERY_FLOWER_ADDRESS"]}
    }


@hookimpl
def flask_execute_check_ready(service: Service, process: ServiceProcess) -> bool | None:
    if service.kind != "flower" or service.address is None:
        return None
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(service.address) == 0
