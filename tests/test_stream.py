"""Streamed results: a submitted generator function's items, as the worker yields
them, read with ``for``, ``async for``, another app, and the status endpoint."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading

import celery as celery_module
import pytest
from flask import Flask
from werkzeug.serving import make_server

from flask_execute import Celery, ConfigurationError
from flask_execute.stream_future import StreamFuture, check_stream_backend

pytestmark = pytest.mark.timeout(120)


def test_items_arrive_as_they_are_yielded_then_the_return_value(celery, m, gate):
    release, key = gate
    future = celery.submit(m.count_up, 5, key)
    assert isinstance(future, StreamFuture)
    items = iter(future.stream(timeout=60))
    assert next(items) == 0
    # The generator waits for the gate after its first item: nothing else is done.
    assert not future.done()
    release()
    assert list(items) == [1, 2, 3, 4]
    assert future.result(timeout=30) == "counted 5"


def test_many_fast_items_come_in_order_in_few_batches(celery, m):
    future = celery.submit(m.count_up, 10_000)
    assert list(future.stream(timeout=60)) == list(range(10_000))
    assert future.result(timeout=5) == "counted 10000"
    assert 1 <= future.batches <= 100, future.batches
    # Items wait in the backend: a reader that starts after the end reads them all.
    assert sum(1 for _ in future.stream(timeout=30)) == 10_000
    # Found again from its stored outcome alone, the stream still reads whole.
    again = celery.get(future.id)
    assert isinstance(again, StreamFuture) and again is not future
    assert list(again.stream(timeout=30)) == list(range(10_000))
    plain = celery.submit(m.add, 1, 2)
    plain.result(timeout=30)
    assert not isinstance(celery.get(plain.id), StreamFuture)


def test_an_exception_ends_the_stream_after_the_items_before_it(celery, m):
    future = celery.submit(m.stream_then_fail, 3)
    seen = []
    with pytest.raises(ValueError, match="the stream broke"):
        for item in future.stream(timeout=60):
            seen.append(item)
    assert seen == [0, 1, 2]
    with pytest.raises(ValueError, match="the stream broke"):
        future.result(timeout=5)
    retried = celery.submit(m.stream_retry)
    with pytest.raises(RuntimeError, match="cannot retry a streamed call"):
        list(retried.stream(timeout=60))


def test_async_for(celery, m):
    async def read():
        future = celery.submit(m.count_up, 50)
        return [item async for item in future.stream(timeout=60)], await future

    items, value = asyncio.run(read())
    assert items == list(range(50)) and value == "counted 50"


def test_a_stream_read_from_another_app(celery, m, gate):
    import tests.apps.status_app as sa

    release, key = gate
    future = celery.submit(m.count_up, 3, key)
    assert next(iter(future.stream(timeout=60))) == 0
    elsewhere = sa.celery.get(future.id)
    assert isinstance(elsewhere, StreamFuture) and elsewhere is not future
    release()
    assert list(elsewhere.stream(timeout=60)) == [0, 1, 2]
    assert elsewhere.result(timeout=30) == "counted 3"


def test_the_status_endpoint_streams_items_then_the_outcome(celery, m, gate):
    import tests.apps.status_app as sa

    release, key = gate
    future = sa.celery.submit(m.count_up, 4, key)
    server = make_server("127.0.0.1", 0, sa.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    events: list[tuple[str, dict]] = []
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        connection.request("GET", f"/tasks/{future.token}/events")
        response = connection.getresponse()
        name = ""
        while line := response.readline().decode():
            if line.startswith("event: "):
                name = line[7:].strip()
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "item" and events[-1][1]["item"] == 0:
                    release()
        connection.close()
    finally:
        server.shutdown()
        thread.join(10)
    items = [data for name, data in events if name == "item"]
    assert items == [{"index": i, "item": i} for i in range(4)]
    assert events[-1][0] == "done" and events[-1][1]["result"] == "counted 4"


def test_eager_streams_and_bad_uses():
    app = Flask("eager-stream")
    app.config.update(
        CELERY_ALWAYS_EAGER=True,
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
    )
    celery = Celery(app)

    def letters(word):
        yield from word
        return len(word)

    future = celery.submit(letters, "abc")
    assert list(future.stream()) == ["a", "b", "c"] and future.result() == 3
    assert list(future.stream()) == ["a", "b", "c"]  # read again from the start
    with pytest.raises(TypeError, match="cannot stream"):
        celery.map(letters, ["ab"], ["cd"])

    async def agen():
        yield 1

    with pytest.raises(TypeError, match="async generator function"):
        celery.submit(agen)


def test_a_backend_that_holds_no_keys_refuses_streams():
    # rpc:// is refused at init_app; a database backend needs SQLAlchemy: Celery's own
    # rpc backend stands in for every backend that is not a key-value store.
    raw = celery_module.Celery("no-keys", broker="memory://", backend="rpc://")
    with pytest.raises(ConfigurationError, match="key-value result backend"):
        check_stream_backend(raw.backend, eager=False)
    check_stream_backend(raw.backend, eager=True)  # eager calls hold no backend


def test_a_stream_inside_a_batch_is_sent_at_once(celery, m):
    with celery.batch() as batch:
        held = celery.submit(m.add, 1, 2)
        future = celery.submit(m.count_up, 3)
        # Read inside the block: a stream is not held with the batch's calls.
        assert list(future.stream(timeout=60)) == [0, 1, 2]
        assert len(batch) == 1 and not held.done()
    assert held.result(timeout=30) == 3
