"""The browser side of the status endpoint, in a real headless Chromium.

``examples/web.py`` is served by ``flask --app examples/web.py run``, its broker this
run's Redis database; its local worker starts on a first job (in the fixture, so that
no test waits for it) and stops with the server. Selenium drives Debian's Chromium
through its chromedriver (``tests/run.sh`` installs both when missing): the page starts
a job and follows it with the blueprint's ``watch.js``, over server-sent events or by
polling.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import re
import shutil
import signal
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests import helpers

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLASK = helpers.FLASK
EXAMPLE = helpers.ROOT / "examples" / "web.py"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Site:
    """The example served over HTTP: its address and the server's request log."""

    url: str
    log: Path

    def get_json(self, path: str) -> Any:
        return self.request("GET", path)

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Any:
        parts = urllib.parse.urlsplit(self.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            body = urllib.parse.urlencode(form) if form is not None else None
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            assert response.status == 200, (response.status, response.read())
            return json.loads(response.read())
        finally:
            connection.close()

    def requests_for(self, status_url: str) -> list[str]:
        """The request lines the server logged for a status URL and the URLs under it."""
        log = ANSI.sub("", self.log.read_text(errors="replace"))  # werkzeug colours some
        pattern = re.compile(rf'"((?:GET|POST) {re.escape(status_url)}(?:/\w+)? HTTP/[\d.]+)"')
        return pattern.findall(log)


@pytest.fixture(scope="module")
def site(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory, session_pids: set[int]
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("web")
    port = helpers.free_port()
    env = helpers.test_env(CELERY_BROKER_URL=broker_url, CELERY_LOG_DIR=str(folder / "logs"))
    args = [FLASK, "--app", str(EXAMPLE.relative_to(helpers.ROOT)), "run", "--port", str(port)]
    proc = helpers.spawn(args, env=env, log=folder / "web.log")
    # The server and its worker live as long as the module: not orphans of one test.
    session_pids.add(proc.pid)
    try:
        served = Site(f"http://127.0.0.1:{port}", folder / "web.log")
        helpers.wait_for(lambda: _answers(port, proc, served.log), 30, 0.1, "the example")
        # A first job starts the local worker; the tests then find it running.
        status = served.request("POST", "/jobs", {"steps": "1"})["status"]
        helpers.wait_for(
            lambda: served.get_json(status)["done"], 90, 0.2, "the example's first job"
        )
        yield served
    finally:
        session_pids.discard(proc.pid)
        _stop(proc)


def _answers(port: int, proc: Any, log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the example exited with {proc.returncode}:\n{log.read_text()}")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/tasks/watch.js")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _stop(proc: Any) -> None:
    """TERM the server, which stops its worker (warm shutdown); then whatever is left."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    _gone, alive = psutil.wait_procs(family, timeout=30)
    for p in alive:
        helpers.stop_process_tree(p)
    helpers.stop_process_tree(proc)


@pytest.fixture(scope="module")
def example(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """``examples/web.py`` imported here with the same broker: its ``celery.get(id)``
    reads a task's state from the backend (nothing is submitted, no worker starts)."""
    spec = importlib.util.spec_from_file_location("example_web", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CELERY_BROKER_URL", broker_url)
        env.setenv("CELERY_LOG_DIR", str(tmp_path_factory.mktemp("example-logs")))
        spec.loader.exec_module(module)
    try:
        yield module
    finally:
        module.celery.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium with a profile of its own; always quit."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(
            "Chromium is not installed: bash tests/run.sh installs it "
            "(apt-get install -y chromium chromium-driver)"
        )
    with helpers.chromium(tmp_path) as driver:
        yield driver


def wait(driver: Any, timeout: float = 30) -> WebDriverWait:
    return WebDriverWait(driver, timeout, poll_frequency=0.05)


def bar_value(driver: Any) -> float:
    return float(driver.find_element(By.ID, "bar").get_property("value"))


def text(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def run_job(driver: Any, site: Site, query: str) -> tuple[str, list[float]]:
    """Open the page, start a job of 10 steps, see the bar between 0 and 1, then the
    result at 100 %; return the job's status URL and the fractions the page received."""
    driver.get(f"{site.url}/?{query}&steps=10")
    driver.find_element(By.ID, "start").click()
    # The bar itself, read from the page while the job runs: strictly between 0 and 1.
    wait(driver).until(lambda d: 0 < bar_value(d) < 1)
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "result"), "counted"))
    assert text(driver, "result") == "counted 10 steps"
    assert text(driver, "state") == "SUCCESS"
    assert bar_value(driver) == 1 and text(driver, "percent") == "100 %"
    seen = driver.execute_script("return window.seenFractions")
    between = sorted({f for f in seen if 0 < f < 1})
    assert len(between) >= 2, seen
    assert seen == sorted(seen), seen
    assert driver.execute_script("return window.outcomes") == ["SUCCESS"]  # onDone, once
    status_url: str = driver.execute_script("return window.statusUrl")
    assert status_url.startswith("/tasks/")
    return status_url, seen


def test_the_bar_follows_a_job_over_server_sent_events(browser, site):
    status_url, seen = run_job(browser, site, "polling=0")
    # The stream followed the job to its end: its last report came with the outcome
    # (a poll after the end reads only the outcome, so the polling test cannot ask this).
    assert seen[-1] == 1, seen
    requests = site.requests_for(status_url)
    assert requests == [f"GET {status_url}/events HTTP/1.1"], requests


def test_the_bar_follows_a_job_by_polling(browser, site):
    status_url, _seen = run_job(browser, site, "polling=1")
    requests = site.requests_for(status_url)
    # Every 250 ms over the job's 2.5 s; never the event stream.
    assert len(requests) >= 3 and set(requests) == {f"GET {status_url} HTTP/1.1"}, requests


@pytest.mark.parametrize("polling", [False, True], ids=["events", "polling"])
def test_cancel_from_the_page(browser, site, example, polling):
    browser.get(f"{site.url}/?polling={int(polling)}&steps=400")
    browser.find_element(By.ID, "start").click()
    wait(browser).until(lambda d: bar_value(d) > 0)
    browser.find_element(By.ID, "cancel").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "state"), "cancelled"))
    assert text(browser, "result") == ""
    assert 0 < bar_value(browser) < 1
    assert browser.execute_script("return window.outcomes") == ["REVOKED"]
    status_url = browser.execute_script("return window.statusUrl")
    assert f"POST {status_url}/cancel HTTP/1.1" in site.requests_for(status_url)
    # The web process says so ...
    status = site.get_json(status_url)
    assert status["state"] == "REVOKED" and status["done"] is True
    # ... and so does the backend: the worker stopped the job and stored its outcome, as
    # ``celery.get(id)`` shows in a process that never followed it.
    future = helpers.wait_for(
        lambda: (f := example.celery.get(status["id"])).state == "REVOKED" and f, 30
    )
    assert future.cancelled()


@pytest.mark.parametrize("polling", [False, True], ids=["events", "polling"])
def test_a_bad_status_url_calls_on_error_and_stops(browser, site, polling):
    bad = f"/tasks/not-a-token-{uuid.uuid4().hex}"
    browser.get(site.url + "/")
    calls = browser.execute_async_script(
        """
        var done = arguments[arguments.length - 1];
        var calls = {progress: 0, done: 0, errors: []};
        window.watchCalls = calls;
        var fetches = 0;
        var realFetch = window.fetch;
        window.fetch = function () { fetches += 1; return realFetch.apply(this, arguments); };
        window.countFetches = function () { return fetches; };
        flaskExecute.watch(arguments[0], {
          polling: arguments[1],
          interval: 50,
          onProgress: function () { calls.progress += 1; },
          onDone: function () { calls.done += 1; },
          onError: function (error) { calls.errors.push(error.message); done(calls); },
        });
        """,
        bad,
        polling,
    )
    assert calls["progress"] == 0 and calls["done"] == 0
    assert calls["errors"] == ["unknown or expired task: HTTP 404"], calls
    # It stopped: no second request, however long we give it (40 intervals).
    with pytest.raises(TimeoutException):
        wait(browser, 2).until(lambda d: d.execute_script("return window.countFetches()") > 1)
    assert browser.execute_script("return window.watchCalls.errors.length") == 1
    # The server saw the same: the stream refused (unless polling), then one read.
    expected = [] if polling else [f"GET {bad}/events HTTP/1.1"]
    assert site.requests_for(bad) == [*expected, f"GET {bad} HTTP/1.1"]


@pytest.mark.parametrize("polling", [False, True], ids=["events", "polling"])
def test_a_handler_that_throws_does_not_stop_the_watch(browser, site, polling):
    browser.get(site.url + "/")
    outcome = browser.execute_async_script(
        """
        var polling = arguments[0], done = arguments[arguments.length - 1];
        var seen = {progress: 0, done: [], uncaught: []};
        window.addEventListener("error", function (event) {
          seen.uncaught.push(event.message);
          event.preventDefault();
        });
        var form = new FormData();
        form.append("steps", "4");
        fetch("/jobs", {method: "POST", body: form})
          .then(function (response) { return response.json(); })
          .then(function (body) {
            flaskExecute.watch(body.status, {
              polling: polling,
              interval: 100,
              onProgress: function () { seen.progress += 1; throw new Error("page bug"); },
              onDone: function (status) {
                seen.done.push(status.state);
                // After the handler's error, thrown by a timer set before this one.
                setTimeout(function () { done(seen); }, 0);
              },
            });
          });
        """,
        polling,
    )
    assert outcome["done"] == ["SUCCESS"], outcome
    assert outcome["progress"] >= 2, outcome
    # The handler's error is not swallowed: it shows as an uncaught error of the page.
    assert outcome["uncaught"] and all("page bug" in m for m in outcome["uncaught"]), outcome
