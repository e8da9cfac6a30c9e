"""Test helpers: Redis database per run, real worker processes, orphan checks.

Every process a test starts carries ``FLASK_EXECUTE_TEST_RUN`` in its environment, so
the orphan check finds it (and its children) in the process table whatever its name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
#: The ``flask`` command of this environment.
FLASK = str(Path(sys.executable).parent / "flask")
RUN_ID = os.environ.setdefault("FLASK_EXECUTE_TEST_RUN", uuid.uuid4().hex)
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def allocate_redis_db() -> int:
    """Claim a Redis database number no other test run uses (lease in db 0)."""
    client = redis.Redis(REDIS_HOST, REDIS_PORT, db=0)
    for db in range(1, 16):
        if client.set(f"flask_execute:test-db:{db}", RUN_ID, nx=True, ex=3600):
            redis.Redis(REDIS_HOST, REDIS_PORT, db=db).flushdb()
            return db
    raise RuntimeError("no free Redis database for this test run (all 15 leased)")


def release_redis_db(db: int) -> None:
    client = redis.Redis(REDIS_HOST, REDIS_PORT, db=0)
    redis.Redis(REDIS_HOST, REDIS_PORT, db=db).flushdb()
    if client.get(f"flask_execute:test-db:{db}") == RUN_ID.encode():
        client.delete(f"flask_execute:test-db:{db}")


def test_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess of the tests: the repo importable, the run marked."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["FLASK_EXECUTE_TEST_RUN"] = RUN_ID
    env.pop("FLASK_EXECUTE_WORKER", None)
    env.pop("FLASK_EXECUTE_TEST_IMPORTS", None)
    env.update(extra)
    return env


def run_command(
    args: list[str], timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a short-lived command (``flask celery status ...``) from the checkout, with
    the test environment plus ``env``, to completion within ``timeout`` seconds."""
    return subprocess.run(
        args,
        env=test_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(
    args: list[str], *, env: dict[str, str], log: Path | None = None, cwd: Path | str = ROOT
) -> subprocess.Popen[bytes]:
    """Start a process in its own session, output to ``log`` (or discarded)."""
    out: Any = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            args,
            env=env,
            cwd=str(cwd),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log is not None:
            out.close()


def stop_process_tree(proc: subprocess.Popen[bytes] | psutil.Process, timeout: float = 10) -> None:
    """TERM the process and its descendants, then KILL what is left."""
    try:
        root = psutil.Process(proc.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    if isinstance(proc, subprocess.Popen):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def marked_processes(exclude: Iterable[int] = ()) -> list[psutil.Process]:
    """Live processes started by this test run (by environment marker)."""
    excluded = set(exclude)
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        if p.pid == os.getpid() or p.pid in excluded:
            continue
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get("FLASK_EXECUTE_TEST_RUN") == RUN_ID:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def family_pids(pids: Iterable[int]) -> set[int]:
    """The pids and all their live descendants."""
    out: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            out.add(pid)
            out.update(c.pid for c in root.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return out


def start_worker(
    app_path: str,
    broker: str,
    log: Path,
    *,
    name: str | None = None,
    concurrency: int = 2,
    queues: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a real ``celery worker`` for the Flask app at ``app_path``."""
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "flask_execute.celery",
        "worker",
        "-l",
        "info",
        "-c",
        str(concurrency),
        "--without-gossip",
        "--without-mingle",
        "-n",
        name or f"w{uuid.uuid4().hex[:8]}@%h",
    ]
    if queues:
        args += ["-Q", queues]
    env = test_env(FLASK_APP=app_path, FLASK_EXECUTE_TEST_BROKER=broker, **(extra_env or {}))
    return spawn(args, env=env, log=log)


def wait_worker_ready(
    celery_app: Any,
    proc: subprocess.Popen[bytes],
    log: Path,
    name_prefix: str | None = None,
    timeout: float = 30,
) -> None:
    """Wait until a worker answers ``ping`` (in-process control API), or fail with its log."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode}:\n{log.read_text()}")
        replies = celery_app.control.ping(timeout=0.5) or []
        names = [n for r in replies for n in r]
        return any(name_prefix is None or n.startswith(name_prefix) for n in names)

    try:
        wait_for(ready, timeout=timeout, interval=0.1, message="worker ping")
    except AssertionError:
        raise AssertionError(
            f"worker not ready in {timeout}s:\n{log.read_text()[-3000:]}"
        ) from None


def start_beat(
    app_path: str,
    broker: str,
    log: Path,
    *,
    schedule_file: Path | None = None,
    scheduler: str = "flask_execute.beat:LockedScheduler",
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a real ``celery beat`` for the Flask app at ``app_path``, as the services
    plugin does (``-S flask_execute.beat:LockedScheduler -s <file>``)."""
    args = [sys.executable, "-m", "celery", "-A", "flask_execute.celery", "beat"]
    args += ["-S", scheduler, "-l", "debug"]
    if schedule_file is not None:
        args += ["-s", str(schedule_file)]
    env = test_env(FLASK_APP=app_path, FLASK_EXECUTE_TEST_BROKER=broker, **(extra_env or {}))
    return spawn(args, env=env, log=log)


def pip_install_target(source: Path, target: Path, *options: str) -> None:
    """``pip install --no-deps --target target source`` offline; fail with pip's output."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            *options,
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((REDIS_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_answers(port: int, path: str) -> bool:
    """Whether ``GET path`` on 127.0.0.1:``port`` answers 200 (a web process is up)."""
    import http.client

    try:
        connection = http.client.HTTPConnection(REDIS_HOST, port, timeout=2)
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False


#: Headless Chromium as root, and quiet: without the background-networking flags its
#: own connections at start-up get in the way of the page's.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@contextlib.contextmanager
def chromium(folder: Path) -> Iterator[Any]:
    """Debian's headless Chromium driven by Selenium, with a profile (and the driver's
    log) in ``folder``; always quit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={folder / 'profile'}")
    service = Service("/usr/bin/chromedriver", log_output=str(folder / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


class PrivateRedis:
    """A ``redis-server`` of the test's own, on a free port, with its own folder.

    For tests that stop, pause, restart or cut Redis: never do that to the shared one.
    Its data survive :meth:`restart` (append-only file in ``folder``).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        return f"redis://{REDIS_HOST}:{self.port}/{db}"

    def client(self, db: int = 0, **options: Any) -> redis.Redis:
        return redis.Redis(REDIS_HOST, self.port, db=db, **options)

    def start(self) -> None:
        args = ["redis-server", "--bind", REDIS_HOST, "--port", str(self.port)]
        args += ["--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always"]
        args += ["--save", "", "--daemonize", "no"]
        self.proc = spawn(args, env=test_env(), log=self.folder / "redis.log")

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError((self.folder / "redis.log").read_text())
            try:
                return bool(self.client(socket_connect_timeout=0.2).ping())
            except redis.RedisError:
                return False

        wait_for(answers, timeout=10, message=f"redis-server on port {self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # a paused server cannot exit
            stop_process_tree(proc, timeout=5)

    def restart(self, down: float = 0.0) -> None:
        """Stop the server, stay down ``down`` seconds, start it on the same port."""
        self.stop()
        time.sleep(down)  # the outage itself is what the test measures, not a wait
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def warm_broker_reads(
    celery: Any, server: PrivateRedis, add: Callable[..., Any]
) -> Callable[[], int]:
    """Connect ``celery``'s publishers to ``server`` (a thread's own, by one submit of
    ``add``; the pooled ones, by a map) and return a reader of the server's count of
    socket reads: each round trip to it is at least one (the reader's own too)."""
    celery.submit(add, 0, 0)
    celery.map(add, [0, 0], [0, 0])
    client = server.client()
    return lambda: int(client.info("stats")["total_reads_processed"])


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    """Start a :class:`PrivateRedis` for a block; always stop it."""
    server = PrivateRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_script(module: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Run ``python -m module`` in its own session, its stdin and output piped (text)."""
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_interruptible,
    )


def run_to_end(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float, *, merge: bool = False
) -> tuple[int, str, str]:
    """Run ``command`` in its own session to its end: (returncode, stdout, stderr),
    stderr in stdout with ``merge``. Past ``timeout`` its whole tree is stopped and the
    test fails with what it printed."""
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_tree(proc)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(command)} did not end within {timeout}s:\n{out}\n{err or ''}")
    finally:
        stop_process_tree(proc)
    return proc.returncode, out, err or ""


def _interruptible() -> None:
    # A shell's background job (CI run with `&`) ignores SIGINT, and the child inherits
    # that: give it the default, so that Python turns Ctrl-C into KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    """The rest of the first output line of ``proc`` that starts with ``prefix``; fail
    with everything it printed if it ends without one."""
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"no {prefix!r} line:\n" + "".join(lines))


@contextlib.contextmanager
def running_worker(
    app_path: str,
    celery_app: Any,
    broker: str,
    log: Path,
    *,
    name: str | None = None,
    **options: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker (:func:`start_worker`) for a block: ready when the block starts,
    stopped when it ends. ``name`` is its node name's prefix (``name@%h``)."""
    proc = start_worker(app_path, broker, log, name=name and f"{name}@%h", **options)
    try:
        wait_worker_ready(celery_app, proc, log, name_prefix=name and f"{name}@")
        yield proc
    finally:
        stop_process_tree(proc)


@contextlib.contextmanager
def session_worker(
    app_path: str,
    celery_app: Any,
    broker: str,
    log: Path,
    session_pids: set[int],
    *,
    name: str,
    **options: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """A :func:`running_worker` for a session fixture, exempt from the orphan check."""
    with running_worker(app_path, celery_app, broker, log, name=name, **options) as proc:
        session_pids.add(proc.pid)
        try:
            yield proc
        finally:
            session_pids.discard(proc.pid)


@contextlib.contextmanager
def made_apps(
    create: Callable[[], Any], configure: Callable[..., Any], stop_timeout: float
) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """``make(**config)``: ``configure(**config)``, then ``create()`` a Flask app; yield
    ``(app, its extension)``. Every app made stops its local services at the end."""
    apps: list[Any] = []

    def make(**config: object) -> tuple[Any, Any]:
        configure(**config)
        app = create()
        apps.append(app)
        return app, app.extensions["celery"]

    try:
        yield make
    finally:
        for app in apps:
            app.extensions["celery"].stop(timeout=stop_timeout)


# -- RabbitMQ --------------------------------------------------------------------------

#: Where the suite's RabbitMQ answers (``tests/run.sh`` starts it, guest/guest).
RABBITMQ = ("127.0.0.1", 5672)


def rabbitmq_answers(timeout: float = 1.0) -> bool:
    """Whether something accepts connections at :data:`RABBITMQ`."""
    try:
        socket.create_connection(RABBITMQ, timeout=timeout).close()
    except OSError:
        return False
    return True


def rabbitmqctl(*args: str) -> bool:
    """Run ``rabbitmqctl args...``; whether it succeeded (``False`` if not installed)."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return False
    # Not marked as this run's: an Erlang helper it may leave is no orphan of ours.
    env = {k: v for k, v in os.environ.items() if k != "FLASK_EXECUTE_TEST_RUN"}
    done = subprocess.run([ctl, *args], env=env, capture_output=True, timeout=60)
    return done.returncode == 0


@contextlib.contextmanager
def rabbitmq_vhost(tag: str) -> Iterator[str]:
    """An ``amqp://`` URL of a virtual host of this run's own (``tag`` names the user of
    it), guest allowed everything, deleted at the end with all it holds. Skips the test
    when no RabbitMQ answers; fails when ``rabbitmqctl`` cannot make the vhost."""
    import pytest

    if not rabbitmq_answers():
        pytest.skip(f"no RabbitMQ answers at {RABBITMQ[0]}:{RABBITMQ[1]} (tests/run.sh starts one)")
    vhost = f"flask_execute-test-{RUN_ID[:12]}-{tag}"
    made = rabbitmqctl("add_vhost", vhost)
    try:
        assert made and rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"), (
            f"rabbitmqctl could not make the virtual host {vhost!r}"
        )
        yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
    finally:
        if made:
            rabbitmqctl("delete_vhost", vhost)


#: Config of an app that must never reach a broker: nothing listens on port 1.
DEAD_BROKER = {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "CELERY_START_LOCAL_WORKERS": False}


def input_future(celery: Any, task_id: str = "an-input") -> Any:
    """A Future of ``celery``'s only app, tracked there, for a task never sent: what a
    call can take as its input without any broker."""
    state = celery.state()
    future = state.pm.make_future(state.app, task_id, "input")
    state.futures.track(future, listen=False)
    return future
