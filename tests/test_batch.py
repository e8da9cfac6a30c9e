"""``with celery.batch():`` a burst of calls held in the block, sent in one round trip."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

from flask_execute import BrokerUnavailable, SerializationError
from flask_execute.chunk_ids import split_call_id
from tests.apps import faults_app
from tests.helpers import private_redis, warm_broker_reads

pytestmark = pytest.mark.timeout(90)


def test_a_burst_of_submits_is_held_then_runs_in_chunks(celery, m):
    with celery.batch() as batch:
        sums = [celery.submit(m.add, i, y=i) for i in range(300)]
        product = celery.submit(lambda x, y: x * y, 6, 7)
        mapped = celery.map(m.add, [1, 2], [3, 4])
        ids = [f.id for f in sums]
        assert not any(f.done() for f in sums)  # nothing has left yet
    assert len(batch) == 303
    assert [f.result(timeout=30) for f in sums] == [2 * i for i in range(300)]
    assert [f.id for f in sums] == ids  # the ids given in the block were the final ones
    assert product.result(timeout=10) == 42 and mapped.result(timeout=10) == [3, 7]
    chunks = [split_call_id(i)[0] for i in ids]
    assert len(set(chunks)) == 9  # 1, 2, 4 ... 256 calls: 9 messages, not 300
    assert celery.state().futures.pending_ids() == []


def test_an_error_in_the_block_sends_nothing(celery, m):
    with pytest.raises(KeyError), celery.batch():
        held = [celery.submit(m.add, i, i) for i in range(5)]
        raise KeyError("stop")
    assert all(f.cancelled() for f in held)
    with pytest.raises(cf.CancelledError):
        held[0].result(timeout=1)
    assert celery.state().futures.pending_ids() == []


def test_a_call_that_cannot_be_serialized_fails_at_its_submit_the_rest_is_sent(celery, m):
    import threading

    with celery.batch():
        before = celery.submit(m.add, 1, 1)
        with pytest.raises(SerializationError, match="call 1 of add"):
            celery.submit(m.add, threading.Lock(), 1)
        after = celery.submit(m.add, 2, 2)
    assert [before.result(timeout=10), after.result(timeout=10)] == [2, 4]


def test_chunksize_of_a_batch_and_options_split_chunks(celery, m):
    with celery.batch(chunksize=2):
        fs = [celery.submit(m.add, i, i) for i in range(5)]
        other = celery.options(countdown=0).submit(m.add, 9, 9)
    chunks = [split_call_id(f.id)[0] for f in fs]
    assert [chunks.count(c) for c in dict.fromkeys(chunks)] == [2, 2, 1]
    assert split_call_id(other.id)[0] not in chunks  # other options, another chunk
    assert [f.result(timeout=10) for f in fs] == [0, 2, 4, 6, 8] and other.result(10) == 18
    with pytest.raises(ValueError, match="chunksize"):
        with celery.batch(chunksize=0):
            pass


def test_a_batch_is_one_round_trip_and_a_dead_broker_fails_every_future(tmp_path, broker_url):
    with private_redis(tmp_path / "redis") as server:
        _, celery = faults_app.create_app(
            server.url(), CELERY_RESULT_BACKEND=broker_url, CELERY_SUBMIT_TIMEOUT=2
        )
        try:
            reads = warm_broker_reads(celery, server, faults_app.add)
            client = server.client()

            before = reads()
            with celery.batch():
                for i in range(100):
                    celery.submit(faults_app.add, i, i)
                celery.submit(faults_app.signal_and_sleep, "k", 0)
            assert reads() - before - 1 <= 5  # one pipeline, not 101 round trips
            # the warm-up (3), 100 calls of add in chunks of 1, 2, 4 ... 32 and 37, and
            # the call of the other function
            assert client.llen("faults") == 3 + 7 + 1
            server.stop()
            with pytest.raises(BrokerUnavailable) as info:
                with celery.batch():
                    lost = [celery.submit(faults_app.add, i, i) for i in range(3)]
            error = info.value
            assert not error.may_arrive and error.pool is not None
            assert list(error.pool) == lost
            assert all(f.exception(timeout=0) is error for f in lost)
            pending = set(celery.state().futures.pending_ids())
            assert not {split_call_id(f.id)[0] for f in lost} & pending  # none waits
        finally:
            celery.stop()
