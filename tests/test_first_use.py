"""The first day of a new user: each trap of a first try now says what is true.

A script without ``if __name__ == "__main__":``, an ``rpc://`` backend, a dead broker,
a running task, ``status()`` without local workers, ``CELERY_WORKERS=0``, the
development signing key, and two projects sharing one Redis in development.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from flask import Flask

from flask_execute import BrokerUnavailable, Celery, ConfigurationError
from flask_execute.plugins.services.isolation import own_name
from tests import helpers

pytestmark = pytest.mark.timeout(120)

FLASK = helpers.FLASK
GUARD = 'if __name__ == "__main__":'

SCRIPT = """\
import os
from flask import Flask
from flask_execute import Celery
app = Flask(__name__)
app.config.update(
    SECRET_KEY="first-use-secret-key-of-32-bytes-or-more",
    CELERY_BROKER_URL=os.environ["FLASK_EXECUTE_TEST_BROKER"],
    CELERY_TASK_DEFAULT_QUEUE=os.environ["FIRST_USE_QUEUE"],
    CELERY_LOG_DIR=os.environ["FIRST_USE_LOGS"],
    CELERY_START_LOCAL_WORKERS=os.environ.get("FIRST_USE_LOCAL") == "1",
)
celery = Celery(app)
"""


def _script(tmp_path: Path, body: str, name: str = "first.py") -> Path:
    path = tmp_path / name
    path.write_text(SCRIPT + body)
    return path


def _run(
    args: list[str], tmp_path: Path, queue: str, local: bool
) -> subprocess.CompletedProcess[str]:
    env = helpers.test_env(
        FIRST_USE_QUEUE=queue,
        FIRST_USE_LOGS=str(tmp_path / "logs"),
        FIRST_USE_LOCAL="1" if local else "0",
    )
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)


def test_a_script_without_the_guard_is_refused_before_anything_starts(tmp_path, broker_url):
    path = _script(tmp_path, 'print("RESULT", celery.submit(pow, 2, 3).result(timeout=30))\n')
    queue = f"first-{uuid.uuid4().hex[:8]}"
    out = _run([sys.executable, str(path)], tmp_path, queue, local=True)
    assert out.returncode != 0 and "RESULT" not in out.stdout
    line = len(SCRIPT.splitlines()) + 1
    assert f"{path}, line {line}, submits work when the script is imported" in out.stderr
    assert f"Move it under `{GUARD}`" in out.stderr
    # nothing published, no worker started (the orphan check looks for processes)
    assert redis.Redis.from_url(broker_url).llen(queue) == 0
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_the_same_script_with_the_guard_runs_on_its_own_worker(tmp_path):
    body = f'{GUARD}\n    print("RESULT", celery.submit(pow, 2, 3).result(timeout=30))\n'
    path = _script(tmp_path, body)
    out = _run([sys.executable, str(path)], tmp_path, f"first-{uuid.uuid4().hex[:8]}", local=True)
    assert out.returncode == 0, out.stderr
    assert "RESULT 8" in out.stdout


def test_a_worker_refuses_an_app_that_submits_when_imported(tmp_path, broker_url):
    path = _script(tmp_path, "celery.submit(pow, 2, 3)\n", name="eager_module.py")
    queue = f"first-{uuid.uuid4().hex[:8]}"
    out = _run([FLASK, "--app", str(path), "celery", "worker"], tmp_path, queue, local=False)
    assert out.returncode != 0
    assert "submits work while a worker imports it to load the app" in out.stderr
    assert GUARD in out.stderr and "Traceback" not in out.stderr
    assert redis.Redis.from_url(broker_url).llen(queue) == 0


def test_the_rpc_result_backend_is_refused_at_init_app():
    app = Flask(__name__)
    app.config.update(CELERY_RESULT_BACKEND="rpc://", CELERY_START_LOCAL_WORKERS=False)
    with pytest.raises(ConfigurationError, match=r"CELERY_RESULT_BACKEND is 'rpc://'.*redis://"):
        Celery(app)


def _dead_app(tmp_path: Path) -> Celery:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(helpers.DEAD_BROKER, SECRET_KEY="first-use-secret-key-of-32-bytes-or-more")
    return Celery(app)


def _given_up_after(message: str) -> float:
    found = re.search(r"gave up after (\d+\.\d+)s", message)
    assert found, message
    return float(found.group(1))


def test_status_on_a_dead_broker_is_a_clean_error_with_the_real_time(tmp_path):
    celery = _dead_app(tmp_path)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        celery.status()
    took = time.monotonic() - started
    message = str(info.value)
    assert message.startswith("the broker at redis://127.0.0.1:1/0 did not answer")
    assert "CELERY_BROKER_URL" in message
    assert _given_up_after(message) <= took + 0.005  # the message rounds to 0.01 s
    with pytest.raises(BrokerUnavailable, match="CELERY_BROKER_URL"):
        celery.inspect.ping()


def test_flask_celery_status_on_a_dead_broker_says_so_without_a_traceback(tmp_path):
    path = tmp_path / "dead.py"
    path.write_text(
        "from flask import Flask\nfrom flask_execute import Celery\n"
        "app = Flask(__name__)\n"
        f"app.config.update({helpers.DEAD_BROKER!r}, SECRET_KEY='x' * 32)\n"
        "celery = Celery(app)\n"
    )
    out = _run([FLASK, "--app", str(path), "celery", "status"], tmp_path, "unused", local=False)
    assert out.returncode == 69  # EX_UNAVAILABLE
    assert out.stderr.startswith("Error: the broker at redis://127.0.0.1:1/0 did not answer")
    assert "Traceback" not in out.stderr and "kombu" not in out.stderr


def test_a_running_task_reads_started(celery, m, gate):
    release, key = gate
    future = celery.submit(m.wait_for_release, key, "done")
    helpers.wait_for(lambda: future.state == "STARTED", timeout=15, message="STARTED")
    assert not future.done()
    release()
    assert future.result(timeout=10) == "done"


def test_status_without_local_workers_lists_no_configured_worker_offline(broker_url):
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="first-use-secret-key-of-32-bytes-or-more",
        CELERY_BROKER_URL=broker_url,
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_WORKERS=["never-started"],
        CELERY_CONTROL_EXCHANGE=f"first-{uuid.uuid4().hex[:8]}",  # nobody else answers
    )
    assert Celery(app).status(timeout=0.3) == {}
    app.config["CELERY_START_LOCAL_WORKERS"] = True  # expected now, and not running
    local = Flask(__name__)
    local.config.update(app.config)
    assert list(Celery(local).status(timeout=0.3).values()) == ["OFFLINE"]


@pytest.mark.parametrize("workers", [0, [], {}])
def test_no_local_worker_at_all_is_refused(workers):
    app = Flask(__name__)
    app.config.update(CELERY_WORKERS=workers, SECRET_KEY="x" * 32)
    with pytest.raises(
        ConfigurationError, match=r"CELERY_WORKERS is .*CELERY_START_LOCAL_WORKERS=False"
    ):
        Celery(app)
    app.config["CELERY_START_LOCAL_WORKERS"] = False  # workers run by hand: fine
    Celery(app)


def test_the_development_key_is_a_loud_warning_said_once(tmp_path, caplog):
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(CELERY_TASK_ALWAYS_EAGER=True)
    celery = Celery(app)
    with caplog.at_level(logging.WARNING, logger="flask_execute"):
        assert celery.submit(pow, 2, 3).result(timeout=5) == 8
        assert celery.submit(pow, 2, 4).result(timeout=5) == 16
    (record,) = [r for r in caplog.records if "development key" in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("no CELERY_SIGNING_KEYS or SECRET_KEY is set")
    assert str(tmp_path / "flask_execute.key") in message and "SECRET_KEY" in message
    assert "flask_execute:" not in message  # the logger's name says it once


def _managed(root: Path, broker_url: str, **config: object) -> Flask:
    app = Flask("app", root_path=str(root))
    app.config.update(
        SECRET_KEY="first-use-secret-key-of-32-bytes-or-more",
        CELERY_BROKER_URL=broker_url,
        **config,
    )
    Celery(app)
    return app


def _conf(app: Flask) -> object:
    return app.extensions["celery"].celery_app.conf


def test_development_setups_of_two_projects_get_names_of_their_own(tmp_path, broker_url):
    one = _conf(_managed(tmp_path / "one", broker_url))
    two = _conf(_managed(tmp_path / "two", broker_url))
    assert one.task_default_queue.startswith("flask_execute.app.")
    assert one.task_default_queue != two.task_default_queue
    assert one.control_exchange == one.task_default_queue != two.control_exchange
    assert one.event_exchange == f"{one.task_default_queue}.events"
    routed = _managed(tmp_path / "one", broker_url, CELERY_TASK_DEFAULT_QUEUE="mine")
    assert _conf(routed).task_default_queue == "mine"
    production = _managed(tmp_path / "one", broker_url, CELERY_START_LOCAL_WORKERS=False)
    conf = _conf(production)
    assert (conf.task_default_queue, conf.control_exchange) == ("celery", "celery")


@pytest.mark.timeout(90)
def test_a_worker_of_another_project_on_the_same_redis_stays_out(tmp_path, broker_url):
    # Two projects, both "app.py", both on the run's Redis database: a worker of the
    # first (started by hand, as in a second terminal) answers and serves only it.
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "app.py").write_text(
        "import os\nfrom flask import Flask\nfrom flask_execute import Celery\n"
        "app = Flask(__name__)\n"
        "app.config.update(SECRET_KEY='first-use-secret-key-of-32-bytes-or-more', "
        "CELERY_BROKER_URL=os.environ['FLASK_EXECUTE_TEST_BROKER'], "
        "CELERY_FLOWER=False, CELERY_SCHEDULER=False)\n"
        "celery = Celery(app)\n"
    )
    first = _managed(folder, broker_url, CELERY_FLOWER=False, CELERY_SCHEDULER=False)
    second = _managed(tmp_path / "two", broker_url, CELERY_FLOWER=False, CELERY_SCHEDULER=False)
    one, two = first.extensions["celery"], second.extensions["celery"]
    node = f"one-{uuid.uuid4().hex[:6]}"
    worker = helpers.spawn(
        [
            FLASK,
            "--app",
            str(folder / "app.py"),
            "celery",
            "worker",
            "-n",
            f"{node}@%h",
            "--without-mingle",
            "--without-gossip",
            "-c",
            "1",
        ],
        env=helpers.test_env(),
        log=tmp_path / "worker.log",
        cwd=tmp_path,
    )
    try:
        found = helpers.wait_for(
            lambda: [n for n in one.status(timeout=0.5) if n.startswith(f"{node}@")],
            timeout=45,
            message="the first project's worker answers its app",
        )
        queues = one.inspect.active_queues(destination=found)[found[0]]
        assert [q["name"] for q in queues] == [own_name(first)] != [own_name(second)]
        assert found[0] not in two.status(timeout=0.5)  # the other project never sees it
    finally:
        helpers.stop_process_tree(worker)
