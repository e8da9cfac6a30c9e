"""The work both sides of ``bench/faults.py`` run: the same functions, so that the
comparison holds them equal (``faults_fe`` submits them, ``faults_raw`` registers them).
"""

from __future__ import annotations

import os
import time

import redis

BROKER = os.environ["FLASK_EXECUTE_BENCH_BROKER"]


def add(x: int, y: int) -> int:
    return x + y


def slow(seconds: float, key: str | None = None) -> float:
    """Sleep ``seconds`` and return them; with ``key``, record the start and the end in
    the broker's Redis (lists ``<key>:started`` and ``<key>:finished``)."""
    _mark(key, "started")
    time.sleep(seconds)
    _mark(key, "finished")
    return seconds


def _mark(key: str | None, what: str) -> None:
    if key is None:
        return
    try:  # a record lost while Redis is down must not fail the task
        with redis.Redis.from_url(BROKER, socket_timeout=2, socket_connect_timeout=2) as client:
            client.rpush(f"{key}:{what}", os.getpid())
    except redis.RedisError:
        pass
