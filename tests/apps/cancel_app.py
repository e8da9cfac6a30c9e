"""An app for the cooperative-cancel tests, on the broker a test chooses.

Workers load ``app``; the environment names its broker: ``FLASK_EXECUTE_TEST_BROKER``
(a ``redis://``, ``amqp://`` or ``filesystem://`` URL, set by
:func:`tests.helpers.start_worker`), ``CANCEL_TEST_BACKEND`` (the result backend: the
run's Redis database, or a ``file://`` folder), ``CANCEL_TEST_FOLDER`` (the filesystem
broker's folder) and ``CANCEL_TEST_BLOCK=1`` (the ``cancel`` plugin blocked). The test
builds its own side with :func:`create_app` from the same values. The queue is the
run's own, so workers of another test run on the same RabbitMQ never take its messages.

On the filesystem broker (``CANCEL_TEST_FILESYSTEM=1``), messages are written whole
(:func:`put_whole`); ``CANCEL_TEST_NO_BROADCAST=1`` makes the transport claim no fanout
exchange (:func:`no_fanout`), as kombu's did before 5.3 (celery#6043): the worker then
has no remote control, and a revoke never reaches it.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from flask import Flask

from flask_execute import Celery, current_task
from tests.apps import worker_app_config

#: Seconds any function here runs at most, whatever happens to the test.
LIMIT = 60

QUEUE = "cancel-" + os.environ.get("FLASK_EXECUTE_TEST_RUN", "local")[:12]

#: The name :func:`cooperative` is registered under as a task (``@celery.task``).
REGISTERED = "cancel_app.cooperative"


def no_fanout() -> Any:
    """What kombu's filesystem transport implements, without the fanout exchange."""
    from kombu.transport import virtual

    return virtual.Transport.implements.extend(exchange_type=frozenset(["direct"]))


def put_whole(channel: Any, queue: str, payload: Any, **kwargs: Any) -> None:
    """kombu's filesystem ``Channel._put``, but a message file appears only once it is
    written. kombu's own creates the file, then writes it: a worker that lists the
    folder in between reads it empty and stops with a JSONDecodeError (kombu#1551),
    which a run of this module met about once in eight."""
    from time import monotonic

    from kombu.utils.encoding import str_to_bytes
    from kombu.utils.json import dumps

    name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
    final = os.path.join(channel.data_folder_out, name)
    with open(final + ".part", "wb") as out:  # never taken: it does not end in .msg
        out.write(str_to_bytes(dumps(payload)))
    os.rename(final + ".part", final)


def broker_config(broker: str, backend: str | None, folder: str | None) -> dict[str, Any]:
    """The config keys of one broker choice (see the module's docstring)."""
    config: dict[str, Any] = {"CELERY_BROKER_URL": broker}
    if backend:
        config["CELERY_RESULT_BACKEND"] = backend
    if broker.startswith("filesystem://") and folder:
        queue = Path(folder) / "queue"
        for sub in (queue, Path(folder) / "control"):
            sub.mkdir(parents=True, exist_ok=True)
        config["CELERY_BROKER_TRANSPORT_OPTIONS"] = {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "control_folder": str(Path(folder) / "control"),
            "polling_interval": 0.01,
        }
    return config


def create_app(
    broker: str | None = None,
    backend: str | None = None,
    folder: str | None = None,
    *,
    block: bool = False,
    **config: Any,
) -> tuple[Flask, Celery]:
    """A Flask app and its extension; by default, as the environment says."""
    env = os.environ
    app = Flask(__name__)
    block = block or env.get("CANCEL_TEST_BLOCK") == "1"
    app.config.update(worker_app_config(QUEUE + ("-blocked" if block else ""), "cancel-app"))
    broker = broker or app.config["CELERY_BROKER_URL"]
    backend = backend or env.get("CANCEL_TEST_BACKEND")
    app.config.update(broker_config(broker, backend, folder or env.get("CANCEL_TEST_FOLDER")))
    if block:
        app.config["CELERY_DISABLED_PLUGINS"] = ["cancel"]
    app.config.update(config)
    extension = Celery(app)
    extension.task(name=REGISTERED)(cooperative)
    return app, extension


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def cooperative(url: str, key: str) -> str:
    """Work on without looking until the test pushes ``<key>:look``; then stop as soon
    as ``current_task.cancelled`` says so, and clean up (``<key>:cleanup``)."""
    client, end = _client(url), time.monotonic() + LIMIT
    client.rpush(f"{key}:started", os.getpid())
    while not client.exists(f"{key}:look") and time.monotonic() < end:
        client.incr(f"{key}:beats")
        time.sleep(0.02)
    while not current_task.cancelled and time.monotonic() < end:
        time.sleep(0.01)
    client.set(f"{key}:cleanup", os.getpid())
    return "stopped"


def stubborn(url: str, key: str) -> str:
    """Ignore cancellation: sleep until the time runs out."""
    _client(url).rpush(f"{key}:started", os.getpid())
    time.sleep(LIMIT)
    return "slept"


def held(url: str, key: str, value: str) -> str:
    """Record ``value`` in ``<key>:ran``, then wait for ``<key>:release``."""
    client = _client(url)
    client.rpush(f"{key}:ran", value)
    client.blpop([f"{key}:release"], timeout=LIMIT)
    client.rpush(f"{key}:release", "1")  # for the next one held
    return value


def polls(url: str, key: str, index: int) -> str:
    """A call of a map: call 0 loops until cancelled; the others return at once."""
    client, end = _client(url), time.monotonic() + LIMIT
    if index:
        return f"call {index}"
    client.rpush(f"{key}:started", os.getpid())
    while not current_task.cancelled and time.monotonic() < end:
        time.sleep(0.01)
    client.set(f"{key}:cleanup", current_task.id)
    return "stopped"


def pid() -> int:
    return os.getpid()


if os.environ.get("CANCEL_TEST_FILESYSTEM") == "1":  # a worker on the filesystem broker
    from kombu.transport import filesystem

    filesystem.Channel._put = put_whole
    if os.environ.get("CANCEL_TEST_NO_BROADCAST") == "1":
        filesystem.Transport.implements = no_fanout()

app, celery = create_app()
