"""Deduplication: one task per key while it is queued or running (``key=``).

``celery.options(key="report:42").submit(fn)`` takes the key in the result backend's
Redis with a small Lua script (atomic across every process): free, it names the new
task and the message is sent; held, the submission gets a Future for the task it
names (through the tracker, as ``celery.get`` does) and nothing is sent. The run task
hears of the key through its message (the ``key`` and ``key_keep`` kwargs, visible in
Flower) and frees it when the call ends for good: at once, or after ``key_keep``
seconds for a call that succeeded. Nothing holds a key forever:

- the key expires after the backend's ``result_expires`` (plus any ``countdown``);
- a key whose task is finished (its stored state is ready: revoked before it ran, a
  worker lost) and that is not being kept is taken over by the next submission;
- a publish that sent nothing, and a cancelled Future, release it here.

Eager mode needs no Redis: a call runs at submit, so it is never queued or running
when another comes; ``key_keep`` keeps its Future in this process.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from celery import states
from celery.exceptions import Retry
from celery.utils.time import maybe_iso8601, maybe_make_aware
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flask_execute.config import result_backend_key
from flask_execute.errors import BrokerUnavailable, ConfigurationError
from flask_execute.wire import STREAM_MARK

if TYPE_CHECKING:
    import concurrent.futures

    from flask_execute.futures import Future
    from flask_execute.runtime import AppState, Message

logger = logging.getLogger("flask_execute")

#: Every key lives under this prefix, then the Celery app's main name (one namespace
#: per application), then the key as given.
PREFIX = "flask_execute:key:"
#: Ends the value of a key a finished task keeps (``key_keep``).
KEPT = " kept"
#: Seconds a key lives when the backend has no ``result_expires``.
DEFAULT_EXPIRY = 86400.0

_READY = "{" + ",".join(f'["{s}"]=true' for s in sorted(states.READY_STATES)) + "}"

# KEYS: the key, the new task's result key. ARGV: the new task id, the key's expiry
# (ms), the new task's marker (its PENDING meta), the marker's expiry (s, 0: none), the
# prefix of result keys. Returns nil when the key now names the new task, else the id
# of the task it names. A key names a live task unless the task's meta is gone, or is
# ready while the key is not kept (nothing freed it: revoked unrun, a worker lost).
_TAKE = f"""
local ready = {_READY}
local held = redis.call('GET', KEYS[1])
if held then
  local id = held
  local kept = false
  if string.sub(held, -{len(KEPT)}) == '{KEPT}' then
    id = string.sub(held, 1, -{len(KEPT) + 1})
    kept = true
  end
  local meta = redis.call('GET', ARGV[5] .. id)
  local live = meta ~= false
  if live and not kept then
    local ok, decoded = pcall(cjson.decode, meta)
    live = not (ok and type(decoded) == 'table' and ready[decoded['status']])
  end
  if live then return id end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4])
else
  redis.call('SET', KEYS[2], ARGV[3], 'NX')
end
return false
"""

# KEYS: the key. ARGV: the task id, milliseconds to keep it (0: free it now).
# Acts only while the key names this very task: never on one taken over meanwhile.
_FREE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1] .. ARGV[3], 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""


def redis_key(state: AppState, key: str) -> str:
    """The Redis key that holds ``key`` for ``state``'s application."""
    return f"{PREFIX}{state.celery_app.main}:{key}"


def send_keyed(state: AppState, message: Message, key: str, keep: float) -> Future:
    """Send ``message`` unless a task holds ``key``; return the Future of the task that
    does the work (``message``'s, or the one holding the key).

    :raises ConfigurationError: the result backend is not Redis; nothing was sent.
    :raises BrokerUnavailable: the backend did not answer; nothing was sent.
    """
    if state.eager:
        return _send_eager(state, message, key, keep)
    client = _client(state)
    name = redis_key(state, key)
    message.kwargs.update(key=name, key_keep=keep)
    held = _take(state, client, name, message)
    if held is not None:  # its sender (or a worker) frees it: no callback per duplicate
        return state.futures.get(held)
    try:
        future = state.send([message], hold=False)[0]
    except BrokerUnavailable as exc:
        if not exc.may_arrive:
            _release(client, name, message.task_id, unsent=backend_key(state, message))
        raise
    except BaseException:
        _release(client, name, message.task_id, unsent=backend_key(state, message))
        raise
    task_id = message.task_id
    future.add_done_callback(lambda f: _release_cancelled(client, name, task_id, f))
    return future


def _client(state: AppState) -> Any:
    # Imported here: Celery's Redis backend pulls in redis.asyncio (~80 ms), only wanted
    # by applications that use keys (the backend has loaded it by then anyway).
    from celery.backends.redis import RedisBackend

    backend = state.celery_app.backend
    if not isinstance(backend, RedisBackend):
        raise ConfigurationError(
            f"option key needs a Redis result backend, to take the key atomically "
            f"across processes; this application's is {type(backend).__name__}: set "
            "CELERY_RESULT_BACKEND to a redis:// URL, or submit without a key. Nothing "
            "was published"
        )
    return backend.client


def _take(state: AppState, client: Any, name: str, message: Message) -> str | None:
    """Take ``name`` for ``message``'s task (``None``), or return the id holding it."""
    backend = state.celery_app.backend
    task_id = message.task_id
    marker: dict[str, Any] = {
        "status": states.PENDING,
        "result": None,
        "task_id": task_id,
        "name": message.name,
    }
    if message.kwargs.get("stream"):  # so celery.get elsewhere reads it as a stream
        marker["result"] = {STREAM_MARK: "1"}
    expires = float(backend.expires or 0)
    lifetime = (expires or DEFAULT_EXPIRY) + _delay(message.options)
    try:
        held = client.eval(
            _TAKE,
            2,
            name,
            backend.get_key_for_task(task_id),
            task_id,
            math.ceil(lifetime * 1000),
            backend.encode(marker),
            math.ceil(expires + _delay(message.options)) if expires else 0,
            backend.key_t(backend.task_keyprefix),
        )
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise BrokerUnavailable(
            f"the result backend did not answer while taking key {name!r} ({exc}): start "
            f"Redis or fix {result_backend_key(state.app.config)}; nothing was published "
            f"(task id {task_id})",
            task_ids=[task_id],
        ) from exc
    return None if held is None else held.decode() if isinstance(held, bytes) else str(held)


def _delay(options: dict[str, Any]) -> float:
    """Seconds before a message with these options may run (``countdown``/``eta``)."""
    countdown = options.get("countdown")
    if countdown:
        return float(countdown)
    eta = options.get("eta")
    if eta is None:
        return 0.0
    when = maybe_make_aware(maybe_iso8601(eta))
    return max(0.0, float(when.timestamp()) - time.time())


def backend_key(state: AppState, message: Message) -> Any:
    """The result key of ``message``'s task."""
    return state.celery_app.backend.get_key_for_task(message.task_id)


def _release(client: Any, name: str, task_id: str, keep: float = 0.0, unsent: Any = None) -> bool:
    """Free ``name`` (or keep it ``keep`` seconds) if it names ``task_id``; a backend
    that does not answer is logged (the key's expiry or a takeover frees it). With
    ``unsent`` (the result key of a task never published), its PENDING record goes
    too, so that no ``celery.get`` waits for it."""
    try:
        if unsent is not None:
            client.delete(unsent)
        return bool(client.eval(_FREE, 1, name, task_id, math.ceil(keep * 1000), KEPT))
    except RedisError as exc:
        logger.warning("could not free key %s of %s: %s", name, task_id, exc)
        return False


def _release_cancelled(
    client: Any, name: str, task_id: str, future: concurrent.futures.Future[Any]
) -> None:
    # Freed at once, as the user asked: a call already running may go on for up to
    # CELERY_CANCEL_GRACE beside the next one (documented).
    if future.cancelled():
        _release(client, name, task_id)


@contextmanager
def freeing(task: Any, key: str | None, keep: float) -> Iterator[None]:
    """Around a run of the run task: free ``key`` when the call ends for good (kept
    ``keep`` seconds after a success); a retry keeps it for the next try."""
    if key is None or not key.startswith(PREFIX):  # only ever our own keys
        yield
        return
    task_id = str(task.request.id)
    client = getattr(task.backend, "client", None)
    try:
        yield
    except Retry:
        raise
    except BaseException:
        if client is not None:
            _release(client, key, task_id)
        raise
    if client is not None:
        _release(client, key, task_id, keep)


# -- eager mode --------------------------------------------------------------------------

#: Per application: key -> (until when it is kept, the Future of its finished call).
_KEPT: weakref.WeakKeyDictionary[AppState, dict[str, tuple[float, Future]]] = (
    weakref.WeakKeyDictionary()
)


def _send_eager(state: AppState, message: Message, key: str, keep: float) -> Future:
    kept = _KEPT.setdefault(state, {})
    now = time.monotonic()
    found = kept.get(key)
    if found is not None and found[0] > now:
        return found[1]
    kept.pop(key, None)
    future = state.send([message], hold=False)[0]
    if keep > 0 and future.done() and not future.cancelled() and future.exception() is None:
        kept[key] = (now + keep, future)
    return future
