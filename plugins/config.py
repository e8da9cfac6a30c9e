"""Default plugin ``config``: Celery's defaults for a Flask application.

Without ``CELERY_BROKER_URL`` the broker is Redis on localhost (the ``services``
plugin may have chosen the filesystem fallback first); a Redis broker is also the
result backend unless ``CELERY_RESULT_BACKEND`` says otherwise.

It also sets how the broker and the backend live through faults: results are written
through a short outage of the backend, and a Redis broker gives the messages a killed
worker held to another worker after :data:`VISIBILITY_TIMEOUT` (see "Broker and backend
faults" in the services documentation).

Blocked, nothing is defaulted: configure ``CELERY_BROKER_URL`` and
``CELERY_RESULT_BACKEND`` yourself (the first submit says so when the backend is
missing, before anything starts or is sent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import bootsteps
from celery.worker.state import active_requests

from flask_execute.markers import hookimpl
from flask_execute.runtime import AppState

if TYPE_CHECKING:
    from celery.worker.consumer import Consumer
    from flask import Flask

#: The broker when the config names none.
DEFAULT_BROKER_URL = "redis://localhost:6379/0"

#: Seconds a Redis broker waits for a delivered message's acknowledgement before it
#: gives the message to another worker (kombu's default is an hour). It must exceed the
#: longest countdown/eta in use, Celery's own retry delays (``retry_backoff_max`` is
#: 600 s) and, with ``acks_late``, the longest task, or that work runs twice.
VISIBILITY_TIMEOUT = 900

#: Seconds between two sweeps of a worker for messages past the visibility timeout.
RESTORE_INTERVAL = 10


@hookimpl(trylast=True)
def flask_execute_configure_celery(app: Flask, settings: dict[str, Any]) -> None:
    broker = str(settings.setdefault("broker_url", DEFAULT_BROKER_URL))
    if broker.startswith(("redis://", "rediss://", "unix://")):
        settings.setdefault("result_backend", broker)
    if broker.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
        transport = dict(settings.get("broker_transport_options") or {})
        transport.setdefault("visibility_timeout", VISIBILITY_TIMEOUT)
        transport.setdefault("unacked_restore_interval", RESTORE_INTERVAL)
        # kombu scans only every tenth sweep by default: ~100 s between scans.
        transport.setdefault("unacked_restore_throttle", 1)
        settings["broker_transport_options"] = transport
    settings.setdefault("broker_connection_retry_on_startup", True)
    # A running task reads STARTED, not PENDING (one backend write per task).
    settings.setdefault("task_track_started", True)
    settings.setdefault("redis_backend_health_check_interval", 30)
    # A result written while the backend restarts is retried (about a minute, with
    # backoff), instead of turning finished work into FAILURE(ConnectionError).
    settings.setdefault("result_backend_always_retry", True)
    settings.setdefault("result_backend_max_retries", 30)
    settings.setdefault("result_backend_base_sleep_between_retries_ms", 100)
    settings.setdefault("result_backend_max_sleep_between_retries_ms", 5000)


@hookimpl
def flask_execute_init_app(app: Flask) -> None:
    AppState.of(app).celery_app.steps["consumer"].add(RestoreStranded)


class RestoreStranded(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker step: messages stranded by a lost broker connection go back at once.

    When a worker loses its connection, Celery drops the messages it had prefetched
    but not started, and kombu's attempt to give them back fails with the connection.
    They would wait in Redis for the visibility timeout. This step remembers them when
    the connection is lost and gives them back as soon as the worker is connected
    again; a task still running (``acks_late``) keeps its message.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Consumer, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.stranded: list[str] = []

    def stop(self, c: Consumer) -> None:
        # Before the Tasks step lets go of the lost connection's consumer; its channel
        # still knows what it was given (kombu's virtual QoS, as Celery's Tasks step
        # itself uses it).
        qos = _channel_qos(c)
        self.stranded = list(getattr(qos, "_delivered", ()))

    def start(self, c: Consumer) -> None:
        stranded, self.stranded = self.stranded, []
        qos = _channel_qos(c)
        restore = getattr(qos, "restore_by_tag", None)  # kombu's Redis transport only
        if not stranded or restore is None:
            return
        running = {getattr(r.message, "delivery_tag", None) for r in tuple(active_requests)}
        for tag in stranded:
            if tag not in running:
                restore(tag)  # a message acknowledged meanwhile is no longer there


def _channel_qos(c: Consumer) -> Any:
    consumer = getattr(c, "task_consumer", None)
    return getattr(getattr(consumer, "channel", None), "qos", None)
