"""Publishing messages under a send's deadline: one at a time, or several in one
round trip (kombu's publish batch)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import kombu.exceptions
from celery.utils.time import maybe_make_aware
from kombu.utils.url import maybe_sanitize_url

from flask_execute.config import user_key
from flask_execute.errors import BrokerUnavailable

from .deadline import (
    Deadline,
    GiveUp,
    batch_landed,
    may_have_landed,
    on_retry,
    on_revive,
)
from .publisher import Publisher, forget

if TYPE_CHECKING:
    import celery
    from kombu import Producer

    from flask_execute.futures import Future
    from flask_execute.runtime import AppState, Message

logger = logging.getLogger("flask_execute")


def send_one(state: AppState, producer: Producer, message: Message, deadline: Deadline) -> Future:
    """Publish one message under the send's deadline; its Future is tracked first, so
    that a result can never arrive before anyone waits for it."""
    task_id = message.task_id
    future = message.make_future(state.app, state.pm)
    state.futures.track(future)  # may start the result source: BrokerUnavailable
    options = dict(message.options)
    warn_if_redelivered(state.celery_app, options)
    policy = {**options.pop("retry_policy", {}), "errback": on_retry, "on_revive": on_revive}
    try:
        deadline.connect(producer)
        deadline.publishing = True
        message.task.publish(
            message.args,
            message.kwargs,
            task_id=task_id,
            producer=producer,
            retry_policy=policy,
            **options,
        )
    except BaseException as exc:
        if deadline.publishing:  # failed without a retry (none left, or none allowed)
            deadline.landed = may_have_landed(exc)
        if not deadline.landed:
            state.futures.withdraw(task_id)
        raise
    finally:
        deadline.publishing = False
    deadline.sent.append(task_id)
    return future


#: kombu's error for a publish batch that failed (kombu >= 5.7; none before).
BATCH_ERRORS: tuple[type[BaseException], ...] = tuple(
    e for e in (getattr(kombu.exceptions, "BatchPublishError", None),) if e is not None
)


def send_batch(
    state: AppState, producer: Producer, messages: Sequence[Message], deadline: Deadline
) -> list[Future]:
    """Publish several messages in one round trip (kombu's publish batch: one Redis
    pipeline). Nothing leaves before the flush: a failure while the batch fills sends
    none of them; after a failed flush, :func:`batch_landed` says which may be in."""
    futures: list[Future] = []
    # Large enough that kombu never flushes on its own half-way (a message is one LPUSH,
    # plus one PEXPIRE per priority step on a queue with an expiry).
    with producer.batch(max_size=16 * len(messages) + 16) as batch:
        try:
            for message in messages:
                futures.append(send_one(state, producer, message, deadline))
            buffered, deadline.sent = deadline.sent, []
            deadline.publishing = True
            batch.flush()
        except BaseException as exc:
            landed = batch_landed(exc, producer, len(messages)) if deadline.publishing else 0
            deadline.sent, deadline.landed = [m.task_id for m in messages[:landed]], False
            for message in messages[landed:]:
                state.futures.withdraw(message.task_id)
            raise
        finally:
            deadline.publishing = False
        deadline.sent = buffered
    return futures


def send_through(
    state: AppState, publisher: Publisher, message: Message, deadline: Deadline
) -> Future:
    """Publish one message through this thread's :class:`Publisher` (buffered, then
    flushed: one round trip). If the flush fails and the failure proves the message
    never left, the publisher is dropped and the message goes the usual way (a pooled
    producer, kombu's retries) within the same deadline."""
    try:
        future = send_one(state, publisher.producer, message, deadline)  # buffered only
    except BaseException:
        forget(state, publisher)  # its batch may be left unusable: the next send makes one
        raise
    deadline.sent.remove(message.task_id)
    deadline.publishing = True
    try:
        publisher.flush()
    except BaseException as exc:
        forget(state, publisher)
        if batch_landed(exc, publisher.producer, 1):
            deadline.landed = True
            raise
        deadline.publishing = False
        message.future = future
        with state.celery_app.producer_or_acquire() as producer:
            return send_one(state, producer, message, deadline)
    finally:
        deadline.publishing = False
    deadline.sent.append(message.task_id)
    return future


def unavailable(
    state: AppState, messages: Sequence[Message], deadline: Deadline, exc: BaseException
) -> BrokerUnavailable:
    """The error of a failed send: what may still arrive, and what to do about it."""
    ids = [m.task_id for m in messages]
    done = len(deadline.sent)
    maybe = deadline.sent + ([ids[done]] if deadline.landed and done < len(ids) else [])
    cause = exc.args[0] if isinstance(exc, GiveUp) and exc.args else exc
    if isinstance(exc, BrokerUnavailable):
        what = str(exc)
    else:
        url = maybe_sanitize_url(state.celery_app.conf.broker_url)
        took = time.monotonic() - deadline.started
        what = (
            f"the broker at {url} did not answer ({cause}; gave up after {took:.2f}s, "
            f"CELERY_SUBMIT_TIMEOUT is {deadline.timeout:g}s): start it, or set "
            f"{user_key(state.app.config, 'broker_url') or 'CELERY_BROKER_URL'} to one that runs"
        )
    if not maybe:
        outcome = "nothing was published (task ids in the error's task_ids)"
        if len(ids) == 1:
            outcome = f"nothing was published (task id {ids[0]})"
    elif len(maybe) == 1 and len(ids) == 1:
        outcome = (
            f"the message may still arrive; its task id is {maybe[0]}: "
            f"celery.get({maybe[0]!r}) or revoke it"
        )
    else:
        outcome = (
            f"{len(maybe)} of {len(ids)} messages may still arrive (task ids in the "
            "error's maybe_sent): celery.get(id) or revoke them; the rest were not published"
        )
    return BrokerUnavailable(f"{what}; {outcome}", task_ids=ids, maybe_sent=maybe)


_REDIS_SCHEMES = ("redis://", "rediss://", "sentinel://", "unix://", "socket://")


def warn_if_redelivered(celery_app: celery.Celery, options: Mapping[str, Any]) -> None:
    """Warn when a countdown or eta outlives a Redis broker's visibility timeout: the
    waiting message would be handed to another worker too, and run twice."""
    if "countdown" not in options and "eta" not in options:
        return
    conf = celery_app.conf
    limit = (conf.broker_transport_options or {}).get("visibility_timeout")
    if limit is None or not str(conf.broker_url).startswith(_REDIS_SCHEMES):
        return
    delay = options.get("countdown")
    eta = options.get("eta")
    if isinstance(eta, datetime):
        delay = (maybe_make_aware(eta, celery_app.timezone) - celery_app.now()).total_seconds()
    if isinstance(delay, (int, float)) and delay > float(limit):
        logger.warning(
            "a countdown/eta of %.0fs is longer than the broker's visibility_timeout (%ss): "
            "Redis will hand the message to another worker after that time and the task "
            "may run twice. Raise CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'] "
            "above your longest countdown, or use a schedule",
            delay,
            limit,
        )
