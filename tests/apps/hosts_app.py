"""The app of tests/test_hosts.py: a web process and hand-started workers on separate
network namespaces, one shared Redis. Each process reads its host's settings from
the environment, as a deployment would (``HOSTS_BROKER``, ``HOSTS_SECRET_KEY``)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from flask import Flask, current_app, jsonify, request

from flask_execute import Celery, current_task

#: Redis list of ``[task id, network namespace]`` pairs: every call that started.
STARTED = "hosts:started"

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ.get("HOSTS_SECRET_KEY", "hosts-test-key-of-32-bytes-or-more"),
    CELERY_BROKER_URL=os.environ.get("HOSTS_BROKER", "redis://127.0.0.1:6379/0"),
    CELERY_START_LOCAL_WORKERS=False,
    CELERY_FLOWER=False,
    CELERY_SCHEDULER=False,
    # A killed worker's calls go back to the queue: acknowledged only when done, and
    # given to another worker 5 s after delivery (looked for every second).
    CELERY_TASK_ACKS_LATE=True,
    CELERY_WORKER_PREFETCH_MULTIPLIER=1,
    CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 5, "unacked_restore_interval": 1},
)
celery = Celery(app)


def netns() -> str:
    """This process's network namespace (``net:[inode]``): which host it runs on."""
    return os.readlink("/proc/self/ns/net")


def where(seconds: float = 0.0) -> dict[str, str]:
    """Record the start, take ``seconds``, return the worker's node name and host."""
    client = redis.Redis.from_url(current_app.config["CELERY_BROKER_URL"])
    client.rpush(STARTED, json.dumps([current_task.request.id, netns()]))
    time.sleep(seconds)
    return {"node": current_task.request.hostname, "netns": netns()}


@app.get("/ping")
def ping() -> Any:
    return jsonify(netns=netns())


@app.get("/workers")
def workers() -> Any:
    replies = celery.celery_app.control.ping(timeout=0.5) or []
    return jsonify(sorted(name for reply in replies for name in reply))


@app.get("/submit")
def submit() -> Any:
    count, seconds = int(request.args["n"]), float(request.args.get("seconds", 0))
    queue = request.args.get("queue")
    options = {"queue": queue} if queue else {}
    futures = [celery.submit(where, seconds, **options) for _ in range(count)]
    return jsonify([f.id for f in futures])


@app.get("/results")
def results() -> Any:
    futures = [celery.get(task_id) for task_id in request.args["ids"].split(",")]
    return jsonify(outcomes(futures, float(request.args.get("timeout", 20))))


@app.get("/map")
def map_calls() -> Any:
    """``celery.map`` of ``n`` calls to ``queue``, and what each call became."""
    count, queue = int(request.args["n"]), request.args["queue"]
    pool = celery.map(where, *([0] for _ in range(count)), queue=queue)
    return jsonify(outcomes(list(pool), float(request.args.get("timeout", 20))))


def outcomes(futures: list[Any], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    out = []
    for future in futures:
        task_id = future.id
        try:
            left = max(0.1, deadline - time.monotonic())
            out.append({"id": task_id, "ok": future.result(timeout=left)})
        except Exception as exc:  # the test reads what each call became
            out.append({"id": task_id, "error": type(exc).__name__, "message": str(exc)})
    return out


@app.get("/started")
def started() -> Any:
    client = redis.Redis.from_url(app.config["CELERY_BROKER_URL"])
    return jsonify([json.loads(item) for item in client.lrange(STARTED, 0, -1)])
