"""Calls waiting for their inputs, kept in the result backend's Redis.

A waiting call is its message as JSON (``msg:<id>``), the count of its inputs still to
end (``left:<id>``), and its id in the set of each such input (``wait:<input>``) and in
``pending`` (scored by when it began to wait). Each change is one Lua script, so two
processes that see the same input end never both publish what waited for it. Keys
expire with the results (``result_expires``) and are named per Celery application.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celery import states

from flask_execute.runtime import RUN_CHUNK
from flask_execute.tasks import due_time

if TYPE_CHECKING:
    from flask_execute.runtime import AppState, Message

logger = logging.getLogger("flask_execute")

_FINAL = sorted(states.READY_STATES)

# KEYS: msg, left, pending, the call's result key, then each input's result key, then
# each input's wait set. ARGV: the call's id, its message, the keys' lifetime, now, its
# PENDING record (so that celery.get knows it elsewhere), then the final states.
_REGISTER = """
local n = (#KEYS - 4) / 2
local final = {}
for i = 6, #ARGV do final[ARGV[i]] = true end
local left = 0
for i = 1, n do
  local meta = redis.call('GET', KEYS[4 + i])
  local done = false
  if meta then
    local ok, decoded = pcall(cjson.decode, meta)
    done = ok and type(decoded) == 'table' and final[decoded['status']] == true
  end
  if not done then
    redis.call('SADD', KEYS[4 + n + i], ARGV[1])
    redis.call('EXPIRE', KEYS[4 + n + i], ARGV[3])
    left = left + 1
  end
end
if left > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  redis.call('SET', KEYS[2], left, 'EX', ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  redis.call('SET', KEYS[4], ARGV[5], 'NX', 'EX', ARGV[3])
end
return left
"""

# An input ended. KEYS: its wait set, pending. ARGV: the key prefix.
# Returns the messages of the calls that waited for it last.
_RELEASE = """
local ids = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
local out = {}
for _, id in ipairs(ids) do
  if redis.call('DECR', ARGV[1] .. 'left:' .. id) <= 0 then
    local msg = redis.call('GET', ARGV[1] .. 'msg:' .. id)
    redis.call('DEL', ARGV[1] .. 'msg:' .. id, ARGV[1] .. 'left:' .. id)
    redis.call('ZREM', KEYS[2], id)
    if msg then table.insert(out, msg) end
  end
end
return out
"""

# A sweep found every input of one call ended. KEYS: msg, left, pending. ARGV: its id.
_TAKE = """
local msg = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return msg
"""


class Waiting:
    """The calls of one application that wait for their inputs.

    :param state: the application's record; its result backend is Celery's Redis one.
    """

    def __init__(self, state: AppState) -> None:
        self.state = state
        backend = state.celery_app.backend
        self.backend = backend
        self.client = backend.client
        self.prefix = f"flask_execute:waiting:{state.celery_app.main}:"
        self.pending = self.prefix + "pending"
        self.ttl = int(backend.expires or 86400)
        self._register = self.client.register_script(_REGISTER)
        self._release = self.client.register_script(_RELEASE)
        self._take = self.client.register_script(_TAKE)

    def _keys(self, task_id: str) -> list[str]:
        return [self.prefix + "msg:" + task_id, self.prefix + "left:" + task_id, self.pending]

    def _result_key(self, task_id: str) -> str:
        return self.backend.get_key_for_task(task_id).decode()  # type: ignore[no-any-return]

    def register(self, message: Message) -> bool:
        """Keep ``message`` until its inputs end; ``True`` if they all have already (the
        caller sends it now, and nothing was kept)."""
        inputs = list(message.after)
        task_id = message.task_id
        keys = [*self._keys(task_id), self._result_key(task_id)]
        keys += [self._result_key(i) for i in inputs]
        keys += [self.prefix + "wait:" + i for i in inputs]
        record = {
            "status": states.PENDING,
            "result": None,
            "task_id": task_id,
            "name": message.name,
        }
        argv = [
            task_id,
            _dump(message),
            self.ttl,
            time.time(),
            self.backend.encode(record),
            *_FINAL,
        ]
        return int(self._register(keys=keys, args=argv)) == 0

    def release(self, task_id: str) -> int:
        """Task ``task_id`` ended: publish the calls that waited for it last; return how
        many were published."""
        found: Sequence[bytes] = self._release(
            keys=[self.prefix + "wait:" + task_id, self.pending], args=[self.prefix]
        )
        for raw in found:
            self.publish(raw)
        return len(found)

    def sweep(self, older_than: float = 1.0, limit: int = 100) -> int:
        """Publish the calls whose inputs have all ended although no one released them
        (the process that saw the end went away first); return how many.

        Looks at the ``limit`` calls that waited longest since their last look, and
        moves those still waiting to the back of the line, their keys' lives renewed
        (an input may run longer than ``result_expires``)."""
        now = time.time()
        ids = [
            raw.decode()
            for raw in self.client.zrangebyscore(
                self.pending, 0, now - older_than, start=0, num=limit
            )
        ]
        if not ids:
            return 0
        messages = self.client.mget([self.prefix + "msg:" + i for i in ids])
        inputs = {
            i: json.loads(raw)["kwargs"].get("after") or []
            for i, raw in zip(ids, messages, strict=True)
            if raw is not None
        }
        wanted = sorted({x for found in inputs.values() for x in found})
        metas = self.client.mget([self._result_key(x) for x in wanted]) if wanted else []
        ended = {x for x, meta in zip(wanted, metas, strict=True) if self._ended(meta)}
        published = 0
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            if task_id not in inputs:  # expired, or published meanwhile
                pipe.zrem(self.pending, task_id)
            elif ended.issuperset(inputs[task_id]):
                taken = self._take(keys=self._keys(task_id), args=[task_id])
                if taken is not None:
                    self.publish(taken)
                    published += 1
            else:
                pipe.zadd(self.pending, {task_id: now}, xx=True)
                for key in self._keys(task_id)[:2]:
                    pipe.expire(key, self.ttl)
        pipe.execute()
        return published

    def _ended(self, meta: bytes | None) -> bool:
        if meta is None:
            return False
        try:
            status = self.backend.decode(meta).get("status")
        except Exception:
            return False
        return status in states.READY_STATES

    def publish(self, raw: bytes) -> None:
        """Publish a kept message, its call signed afresh (it may have waited long)."""
        message = json.loads(raw)
        task_id, options = message["id"], message["options"]
        celery_app = self.state.celery_app
        args = list(message["args"])
        due = due_time(options.get("countdown"), options.get("eta"))
        chunk = message["task"] == RUN_CHUNK
        try:
            args[0] = self.state.wire.renew_call(args[0], task_id=task_id, due=due, chunk=chunk)
            task = celery_app.tasks[message["task"]]
        except Exception as exc:  # it can never be sent (keys rotated away ...): say so
            logger.warning("%s, which waited, cannot be sent: %s", task_id, exc)
            self.backend.mark_as_failure(task_id, exc)
            return
        try:
            task.publish(args, message["kwargs"], task_id=task_id, **options)
        except Exception as exc:  # the broker: keep it for the next sweep, never lose it
            logger.warning("could not publish %s, which waited: %s", task_id, exc)
            pipe = self.client.pipeline()
            pipe.set(self.prefix + "msg:" + task_id, raw, ex=self.ttl)
            pipe.zadd(self.pending, {task_id: 0})
            pipe.execute()

    def withdraw(self, task_id: str) -> bool:
        """Take back the call ``task_id`` if it still waits (it was cancelled): it is
        stored ``REVOKED`` and what waits for it is released; ``False`` if it does not
        wait here."""
        if self._take(keys=self._keys(task_id), args=[task_id]) is None:
            return False
        self.backend.mark_as_revoked(task_id, "cancelled while it waited for its inputs")
        self.release(task_id)
        return True


def _dump(message: Message) -> str:
    body = {
        "id": message.task_id,
        "task": message.task.name,
        "args": list(message.args),
        "kwargs": message.kwargs,
        "options": message.options,
    }
    try:
        return json.dumps(body, default=_iso)
    except TypeError as exc:
        raise TypeError(
            f"a call that waits for Futures keeps its message as JSON until they end, "
            f"and one of its options cannot be: {exc}"
        ) from None


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{value!r} is not JSON")
