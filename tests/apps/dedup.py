"""Functions the deduplication tests submit to ``tests.apps.basic``'s worker, and a
second web process: ``python -m tests.apps.dedup KEY COUNTER GATE`` loads the same app,
prints ``ready``, waits for a line on stdin, submits :func:`counted` under ``KEY`` and
prints ``id: <task id>``."""

from __future__ import annotations

import sys

import redis
from flask import current_app


def _client() -> redis.Redis:
    # Longer than any wait for a gate (redis-py may default to a few seconds).
    return redis.Redis.from_url(current_app.config["CELERY_BROKER_URL"], socket_timeout=90)


def counted(counter, gate=None, value=None):
    """Count this run in ``counter`` (the run's Redis database); with ``gate``, wait
    until it is pushed; return ``value``."""
    client = _client()
    client.incr(counter)
    if gate:
        client.blpop([gate], 60)
    return value


def counted_failure(counter, message):
    _client().incr(counter)
    raise ValueError(message)


def counted_stream(counter, gate, n):
    """Count the run, wait for ``gate``, then yield 0 .. n - 1."""
    client = _client()
    client.incr(counter)
    client.blpop([gate], 60)
    yield from range(n)


def main(key: str, counter: str, gate: str) -> None:
    from tests.apps.basic import celery

    print("ready", flush=True)
    sys.stdin.readline()
    future = celery.options(key=key).submit(counted, counter, gate, "second process")
    print(f"id: {future.id}", flush=True)
    celery.stop()


if __name__ == "__main__":
    # Submitted through the module's own name, so the worker imports it, not __main__.
    from tests.apps import dedup

    dedup.main(*sys.argv[1:4])
