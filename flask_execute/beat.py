"""One beat per broker: :class:`LockedScheduler`, Celery's persistent scheduler behind a lock.

However many processes start beat (each web process in development, a replica per
host in production), only the holder of the lock sends scheduled tasks:

* A Redis broker, or a Redis result backend (RabbitMQ with Redis results): a key set
  with ``SET NX`` and a short expiry (``CELERY_BEAT_LOCK_TIMEOUT``), renewed by the
  holder on every tick (redis-py's :class:`redis.lock.Lock`). A waiting beat tries
  again every few seconds and takes over once the key is released (clean stop) or has
  expired (the holder died).
* No Redis at all (the filesystem broker of development): an exclusive
  :func:`fcntl.flock` on ``<schedule file>.lock``, released by the kernel when the
  holder exits; one beat per host.

A waiting beat does not open the schedule file, so beats sharing one file never
corrupt it. Start beat with::

    celery -A flask_execute.celery beat -S flask_execute.beat:LockedScheduler
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from celery.beat import PersistentScheduler

from flask_execute.config import files_dir

if TYPE_CHECKING:
    import celery

    from flask_execute.runtime import AppState

logger = logging.getLogger("flask_execute.beat")

#: How beat is told to use :class:`LockedScheduler` (``beat -S ...``).
SCHEDULER = "flask_execute.beat:LockedScheduler"

#: Seconds the lock lives unless renewed, when the app does not say.
DEFAULT_LOCK_TIMEOUT = 15.0

#: Celery's default ``beat_schedule_filename`` (a file in the working directory).
CELERY_DEFAULT_FILENAME = "celerybeat-schedule"

#: Celery settings the ``beat`` plugin fills from ``CELERY_BEAT_LOCK_TIMEOUT`` and
#: ``CELERY_BEAT_LOCK_KEY`` (beat extensions keep their options in Celery's
#: configuration, so a beat started by any command finds them).
LOCK_TIMEOUT_SETTING = "flask_execute_beat_lock_timeout"
LOCK_KEY_SETTING = "flask_execute_beat_lock_key"


class BeatLock(Protocol):
    """What :class:`LockedScheduler` needs from a lock."""

    def acquire(self) -> bool:
        """Take the lock if free; ``True`` if this process holds it now."""

    def renew(self) -> bool:
        """Extend the lock; ``False`` if it was lost (expired and taken by another)."""

    def release(self) -> None:
        """Give the lock up, if held."""


class RedisBeatLock:
    """A lock in Redis with an expiry the holder renews (RedBeat-style).

    :param url: the Redis URL (the broker's, or the result backend's).
    :param key: the lock's key.
    :param timeout: seconds the lock lives unless renewed.
    """

    def __init__(self, url: str, key: str, timeout: float) -> None:
        import redis

        self.key = key
        self.timeout = timeout
        client = redis.Redis.from_url(
            url, socket_timeout=max(timeout / 3, 0.5), socket_connect_timeout=max(timeout / 3, 0.5)
        )
        self._lock = client.lock(key, timeout=timeout, blocking=False, thread_local=False)
        #: ``host:pid:random``: who holds the lock, readable with ``GET key``.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._held = False

    def acquire(self) -> bool:
        import redis

        try:
            self._held = bool(self._lock.acquire(blocking=False, token=self.token))
        except redis.RedisError as exc:
            logger.warning("beat: cannot reach Redis for the lock %s: %s", self.key, exc)
            self._held = False
        return self._held

    def renew(self) -> bool:
        import redis

        try:
            self._lock.reacquire()  # atomic: only if the key still holds our token
        except redis.exceptions.LockError:
            self._held = False
        except redis.RedisError as exc:
            # Unreachable: we cannot prove we still hold it, so we stop sending.
            logger.warning("beat: cannot renew the lock %s: %s", self.key, exc)
            self._held = False
        return self._held

    def release(self) -> None:
        import redis

        if self._held:
            self._held = False
            with contextlib.suppress(redis.RedisError):
                self._lock.release()


class FileBeatLock:
    """An exclusive ``flock`` on a file: held until released or the process exits.

    :param path: the lock file (created if missing).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        file = open(self.path, "ab")  # noqa: SIM115 - held open as long as the lock
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            return False
        self._file = file
        return True

    def renew(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)
            file.close()


def schedule_filename(state: AppState) -> str:
    """The schedule file of ``state``'s app: ``<log folder>/celerybeat-schedule-<main>``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(state.celery_app.main))
    return str(files_dir(state.app) / f"celerybeat-schedule-{name}")


def lock_key(celery_app: celery.Celery) -> str:
    """The Redis key of the beat lock: ``CELERY_BEAT_LOCK_KEY`` or one per Celery app."""
    key = celery_app.conf.get(LOCK_KEY_SETTING)
    return str(key) if key else f"flask_execute:beat-lock:{celery_app.main}"


def lock_timeout(celery_app: celery.Celery) -> float:
    """Seconds the lock lives unless renewed: ``CELERY_BEAT_LOCK_TIMEOUT``."""
    return float(celery_app.conf.get(LOCK_TIMEOUT_SETTING) or DEFAULT_LOCK_TIMEOUT)


#: URL schemes redis-py connects to (``Redis.from_url``).
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def lock_url(celery_app: celery.Celery) -> str | None:
    """Where the beat lock lives: the broker when it is Redis, else the result backend
    when that is Redis (an ``amqp://`` broker), else nowhere (``None``: a file lock)."""
    for url in (celery_app.conf.broker_url, celery_app.conf.result_backend):
        if isinstance(url, str) and url.startswith(_REDIS_SCHEMES):
            return url
    return None


def make_lock(celery_app: celery.Celery, schedule_file: str) -> BeatLock:
    """The lock for this app's beat: in Redis (:func:`lock_url`), else on a file."""
    url = lock_url(celery_app)
    if url is not None:
        return RedisBeatLock(url, lock_key(celery_app), lock_timeout(celery_app))
    return FileBeatLock(f"{schedule_file}.lock")


class LockedScheduler(PersistentScheduler):  # type: ignore[misc]
    """:class:`celery.beat.PersistentScheduler` that only ticks while it holds the lock.

    Its lock settings come from the Celery configuration, which the ``beat`` plugin
    fills (with ``beat_schedule_filename`` in ``CELERY_LOG_DIR``).
    """

    _store: Any = None
    max_interval: float

    def __init__(self, app: celery.Celery, *args: Any, **kwargs: Any) -> None:
        lazy = bool(kwargs.pop("lazy", False))
        filename = kwargs.get("schedule_filename")
        # The store opens once the lock is ours (never in __init__): a waiting beat must
        # not touch a schedule file the holder has open.
        super().__init__(app, *args, lazy=True, **kwargs)
        timeout = lock_timeout(app)
        # Renew well before expiry, and look for a free lock as often while waiting.
        self.max_interval = min(float(self.max_interval), timeout / 3)
        self._lock: BeatLock | None = None
        self._holding = False
        if not lazy:  # a lazy instance only describes beat (its banner): no lock
            file = str(filename or CELERY_DEFAULT_FILENAME)
            Path(file).parent.mkdir(parents=True, exist_ok=True)
            self._lock = make_lock(app, file)

    @property
    def holding(self) -> bool:
        """Whether this beat holds the lock and sends the scheduled tasks."""
        return self._holding

    def tick(self, *args: Any, **kwargs: Any) -> float:
        lock = self._lock
        if lock is None:  # a lazy (introspection) instance never schedules
            return float(self.max_interval)
        if self._holding and not lock.renew():
            logger.warning("beat: lost the lock; another beat sends the schedule now")
            self._holding = False
            self._close_store()
        if not self._holding:
            if not lock.acquire():
                return float(self.max_interval)
            self._holding = True
            self._heap = None
            self.setup_schedule()  # ends with the schedule file written (sync)
            logger.info("beat: holding the lock; this beat sends the schedule")
        return float(super().tick(*args, **kwargs))

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()

    def get_schedule(self) -> dict[str, Any]:
        if self._store is None:
            return {}  # waiting for the lock: nothing of ours is scheduled
        schedule: dict[str, Any] = self._store["entries"]
        return schedule

    def set_schedule(self, schedule: dict[str, Any]) -> None:
        if self._store is not None:
            self._store["entries"] = schedule

    schedule = property(get_schedule, set_schedule)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._store = None
            if self._lock is not None:
                self._lock.release()
            self._holding = False
