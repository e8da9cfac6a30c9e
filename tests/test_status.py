"""The status endpoint (``celery.blueprint()``): tokens, JSON, server-sent events and
cancel, against real workers, in this process and from a second web process."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from flask_execute import Celery, ConfigurationError
from flask_execute.status_tokens import StatusTokens
from tests import helpers

pytestmark = pytest.mark.timeout(120)

FLASK = helpers.FLASK


@pytest.fixture(scope="module")
def sa():
    import tests.apps.status_app as module

    return module


@pytest.fixture
def web(sa, celery):
    """The status app's test client (``celery``: the basic worker runs its tasks)."""
    return sa.app.test_client()


def test_a_running_task_then_its_result(sa, web, m, gate):
    release, key = gate
    future = sa.celery.submit(m.report_until_released, key, 2)
    helpers.wait_for(lambda: future.progress is not None and future.progress.done == 2, 30)
    url = f"/tasks/{future.token}"
    body = web.get(url).get_json()
    assert body == {
        "id": future.id,
        "state": "PROGRESS",
        "done": False,
        "progress": {"done": 2, "total": 3, "fraction": 2 / 3, "meta": {"stage": "working"}},
        "result": None,
        "error": None,
    }
    release()
    assert future.result(timeout=30) == "released"
    body = web.get(url).get_json()
    assert body["state"] == "SUCCESS" and body["done"] and body["result"] == "released"
    # The backend keeps only the outcome of a finished task: a fresh read has no progress.
    assert body["progress"] is None


def test_failures_and_results_that_are_not_json(sa, web, m):
    failed = sa.celery.submit(m.fail, "broken")
    odd = sa.celery.submit(m.pid)  # a tuple is JSON (a list); a set is not
    unjsonable = sa.celery.submit(set, [1, 2])
    for future in (failed, odd, unjsonable):
        future.exception(timeout=30)
    assert web.get(f"/tasks/{failed.token}").get_json()["error"] == {
        "type": "ValueError",
        "message": "broken",
    }
    assert web.get(f"/tasks/{odd.token}").get_json()["result"] == list(odd.result())
    body = web.get(f"/tasks/{unjsonable.token}").get_json()
    assert body["result"] is None and body["result_type"] == "builtins.set"
    assert body["state"] == "SUCCESS" and body["error"] is None


def test_bad_tokens_get_a_bare_404(sa, web, m):
    future = sa.celery.submit(m.add, 1, 2)
    future.result(timeout=30)
    other = StatusTokens([b"another-key-of-at-least-32-bytes!!"], sa.app.name)
    foreign_app = StatusTokens(_keys(sa.app), "another-app")
    tampered = future.token[:-2] + ("AA" if not future.token.endswith("AA") else "BB")
    for token in (future.id, tampered, other.make("task", future.id)):
        response = web.get(f"/tasks/{token}")
        assert response.status_code == 404 and b"task" not in response.data.lower()
    assert web.get(f"/tasks/{foreign_app.make('task', future.id)}").status_code == 404
    unknown = StatusTokens(_keys(sa.app), sa.app.name).make("task", "no-such-task")
    assert web.get(f"/tasks/{unknown}").status_code == 404
    assert web.get(f"/tasks/{future.token}").status_code == 200
    assert web.post(f"/tasks/{future.id}/cancel").status_code == 404
    assert web.get(f"/tasks/{future.id}/events").status_code == 404


def test_an_expired_token_gets_404(sa, m):
    tokens = StatusTokens(_keys(sa.app), sa.app.name)
    token = tokens.make("task", "some-id")
    assert tokens.open(token, max_age=60) == ("task", "some-id")
    # Expiry is counted in whole seconds by itsdangerous: wait (bounded) until it lapses.
    helpers.wait_for(lambda: tokens.open(token, max_age=1) is None, 10)
    assert tokens.open(token, max_age=None) == ("task", "some-id")


def test_the_apps_own_check_hides_what_it_refuses(sa, web, m):
    future = sa.celery.submit(m.add, 2, 2)
    future.result(timeout=30)
    assert web.get(f"/guarded/{future.token}").status_code == 404
    sa.ALLOWED.add(future.id)
    try:
        assert web.get(f"/guarded/{future.token}").get_json()["result"] == 4
    finally:
        sa.ALLOWED.discard(future.id)


def test_results_can_be_turned_off():
    app = Flask("no-results")
    app.config.update(
        CELERY_ALWAYS_EAGER=True,
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
        CELERY_STATUS_RESULTS="no",
    )
    with pytest.raises(ConfigurationError, match="CELERY_STATUS_RESULTS must be True or False"):
        Celery(app)


def test_a_pool_reports_counts_and_progress(sa, web, m, gate):
    release, key = gate
    pool = sa.celery.map(m.report_until_released, [key, 1], [key, 1])
    helpers.wait_for(lambda: any(f.progress is not None for f in pool), 30)
    url = f"/tasks/{pool.token}"
    body = web.get(url).get_json()
    assert body["done"] is False and sum(body["counts"].values()) == 2
    assert body["counts"]["running"] >= 1 and body["progress"]["total"] == 2
    release()
    release()
    assert pool.result(timeout=30) == ["released", "released"]
    body = web.get(url).get_json()
    assert body["state"] == "SUCCESS" and body["done"] is True
    assert body["counts"] == {
        "pending": 0,
        "running": 0,
        "succeeded": 2,
        "failed": 0,
        "cancelled": 0,
    }
    assert body["progress"]["fraction"] == 1.0


def test_cancel_through_the_endpoint(sa, web, m, gate):
    _release, key = gate
    future = sa.celery.submit(m.report_until_released, key, 1)
    helpers.wait_for(lambda: future.progress is not None, 30)
    body = web.post(f"/tasks/{future.token}/cancel").get_json()
    assert body["state"] == "REVOKED" and body["done"] is True
    assert future.cancelled()


def test_the_script_is_served(web):
    response = web.get("/tasks/watch.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert b"flaskExecute" in response.data and b"EventSource" in response.data


# -- server-sent events over real HTTP -----------------------------------------------


@pytest.fixture
def server(sa, celery) -> Iterator[int]:
    """The status app served by werkzeug's threaded server, in this process."""
    httpd = make_server("127.0.0.1", 0, sa.app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_port
    httpd.shutdown()
    thread.join(10)


def read_events(response: http.client.HTTPResponse) -> Iterator[tuple[str, str]]:
    """``(event name, data)`` for events, ``("", comment)`` for heartbeats."""
    name, data = "", ""
    while line := response.readline():
        text = line.decode().rstrip("\n")
        if text.startswith(":"):
            yield "", text[1:].strip()
        elif text.startswith("event: "):
            name = text[7:]
        elif text.startswith("data: "):
            data = text[6:]
        elif text == "" and name:
            yield name, data
            name, data = "", ""


def open_stream(port: int, path: str) -> tuple[http.client.HTTPConnection, Iterator]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    return connection, read_events(response)


def test_events_stream_progress_then_the_outcome_then_end(sa, m, gate, server):
    release, key = gate
    future = sa.celery.submit(m.report_until_released, key, 2)
    connection, events = open_stream(server, f"/tasks/{future.token}/events")
    try:
        seen: list[dict] = []
        for name, data in events:
            if name == "progress":
                seen.append(json.loads(data))
                if (seen[-1]["progress"] or {}).get("done") == 2:
                    release()
            elif name == "done":
                final = json.loads(data)
                break
        assert next(events, None) is None  # the stream ends after the outcome
    finally:
        connection.close()
    done_steps = [s["progress"]["done"] for s in seen if s["progress"]]
    assert done_steps == sorted(done_steps) and 2 in done_steps
    assert final["state"] == "SUCCESS" and final["result"] == "released"


def test_idle_streams_send_heartbeats_and_a_gone_client_is_unsubscribed(sa, m, gate, server):
    _release, key = gate
    future = sa.celery.submit(m.report_until_released, key, 1)
    helpers.wait_for(lambda: future.progress is not None, 30)
    connection, events = open_stream(server, f"/tasks/{future.token}/events")
    assert next(events)[0] == "progress"
    assert next(events) == ("", "heartbeat")  # CELERY_STATUS_HEARTBEAT is 0.5 s here
    watched = sa.celery.get(future.id)
    assert watched is future and len(future._hooks) == 1
    connection.close()
    # Noticed at the next heartbeat's write: the stream ends and unsubscribes.
    helpers.wait_for(lambda: not future._hooks, 20)


def test_another_web_process_serves_the_same_token(sa, celery, m, gate, tmp_path):
    release, key = gate
    future = sa.celery.submit(m.report_until_released, key, 2)
    port = helpers.free_port()
    proc = helpers.spawn(
        [FLASK, "--app", "tests.apps.status_app", "run", "--port", str(port)],
        env=helpers.test_env(),
        log=tmp_path / "web.log",
    )
    try:
        helpers.wait_for(lambda: helpers.http_answers(port, "/tasks/watch.js"), 30)
        connection, events = open_stream(port, f"/tasks/{future.token}/events")
        name, data = next(events)
        assert name == "progress" and json.loads(data)["id"] == future.id
        release()
        outcome = next(json.loads(d) for n, d in events if n == "done")
        assert outcome["result"] == "released" and outcome["progress"]["done"] == 3
        connection.close()
    finally:
        helpers.stop_process_tree(proc)


def _keys(app: Flask) -> list[bytes]:
    from flask_execute.signing import signing_keys

    return signing_keys(app)
