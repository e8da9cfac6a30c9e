"""Several hosts: Redis, the web process and each worker on a network of their own.

Every host is a network namespace (``ip netns``) with one veth on a bridge that lives
in a "lan" namespace; the test itself reaches the network from there (``curl``). The
web process is ``flask run`` with ``CELERY_START_LOCAL_WORKERS=False``; the workers are
started by hand with ``flask celery worker``, as in production. Nothing here touches
the host's own network: the namespaces, the bridge and the veths are this run's alone
and go when the namespaces are deleted.

Needs root and ``ip`` (CI runs as root); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import helpers

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps.hosts_app:app"
FLASK = helpers.FLASK
SUBNET = "10.77.0"  # inside this run's namespaces only: no clash with anything
ADDRESSES = {"redis": 2, "web": 3, "w1": 11, "w2": 12, "w3": 13}
WEB = f"http://{SUBNET}.3:5000"
PASSWORD = uuid.uuid4().hex
BROKER = f"redis://:{PASSWORD}@{SUBNET}.2:6379/0"
KEY = "hosts-test-key-of-32-bytes-or-more"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    for tool in ("ip", "curl", "redis-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"fe{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"ip netns add failed: {getattr(exc, 'stderr', b'') or exc!r}"
    _ip("netns", "del", probe)
    return None


class Lan:
    """This run's namespaces: a bridge in ``lan``, one veth on it per host."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.prefix = f"fe{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def add(self, host: str) -> None:
        _ip("netns", "add", self.ns(host))
        self.made.append(self.ns(host))
        _ip("-n", self.ns(host), "link", "set", "lo", "up")

    def build(self) -> None:
        self.add("lan")
        lan = self.ns("lan")
        _ip("-n", lan, "link", "add", "br0", "type", "bridge")
        _ip("-n", lan, "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
        _ip("-n", lan, "link", "set", "br0", "up")
        for host, last in ADDRESSES.items():
            self.add(host)
            veth = f"v-{host}"
            _ip(
                "-n",
                lan,
                "link",
                "add",
                veth,
                "type",
                "veth",
                "peer",
                "eth0",
                "netns",
                self.ns(host),
            )
            _ip("-n", lan, "link", "set", veth, "master", "br0", "up")
            _ip("-n", self.ns(host), "addr", "add", f"{SUBNET}.{last}/24", "dev", "eth0")
            _ip("-n", self.ns(host), "link", "set", "eth0", "up")

    def delete(self) -> None:
        """Delete every namespace made; the veths and the bridge go with them."""
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self.made.clear()

    def marker(self, host: str) -> str:
        """What ``/proc/self/ns/net`` reads on ``host``."""
        return f"net:[{os.stat(f'/run/netns/{self.ns(host)}').st_ino}]"

    def run(self, host: str, args: list[str], log: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``args`` on ``host``, in its own session (``ip netns exec`` execs it)."""
        command = ["ip", "netns", "exec", self.ns(host), *args]
        return helpers.spawn(command, env=helpers.test_env(**env), log=self.folder / log)

    def get(self, path: str, timeout: float = 10) -> Any:
        """``GET path`` on the web host, from the lan; its JSON, or ``None`` when down."""
        args = ["ip", "netns", "exec", self.ns("lan"), "curl", "-sf", "--max-time"]
        args += [str(timeout), f"{WEB}{path}"]
        out = subprocess.run(args, capture_output=True, timeout=timeout + 10)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class Hosts:
    """The running hosts: ``procs`` by host name, exempt from the per-test orphan check
    while they belong to the module (``pids``)."""

    def __init__(self, lan: Lan, pids: set[int]) -> None:
        self.lan, self.pids = lan, pids
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, host: str, args: list[str], **env: str) -> None:
        proc = self.lan.run(host, args, f"{host}.log", **env)
        self.procs[host] = proc
        self.pids.add(proc.pid)

    def stop(self, host: str) -> None:
        proc = self.procs.pop(host, None)
        if proc is not None:
            helpers.stop_process_tree(proc)
            self.pids.discard(proc.pid)

    def start_worker(self, host: str, key: str = KEY, queue: str | None = None) -> None:
        args = [FLASK, "--app", APP, "celery", "worker", "-n", f"{host}@%h", "-c", "1"]
        args += ["-l", "info", "--without-gossip", "--without-mingle"]
        args += ["-Q", queue] if queue else []
        self.start(host, args, HOSTS_BROKER=BROKER, HOSTS_SECRET_KEY=key)

    def wait_workers(self, *hosts: str) -> None:
        def ready() -> bool:
            for host in hosts:
                if self.procs[host].poll() is not None:
                    raise AssertionError(f"{host} exited:\n{self.lan.log(f'{host}.log')}")
            names = self.lan.get("/workers") or []
            return all(any(n.startswith(f"{h}@") for n in names) for h in hosts)

        try:
            helpers.wait_for(ready, timeout=40, interval=0.2, message=f"workers {hosts}")
        except AssertionError:
            logs = "\n".join(f"{h}:\n{self.lan.log(f'{h}.log')}" for h in hosts)
            raise AssertionError(f"workers {hosts} not ready:\n{logs}") from None

    def stop_all(self) -> None:
        for host in list(self.procs):
            self.stop(host)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory, session_pids: set[int]) -> Iterator[Hosts]:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(f"several hosts need network namespaces: {reason}")
    folder = tmp_path_factory.mktemp("hosts")
    lan = Lan(folder)
    running = Hosts(lan, session_pids)
    try:
        lan.build()
        # Its own namespace: the port is free there whatever runs on the machine.
        redis_args = ["redis-server", "--bind", f"{SUBNET}.2", "--port", "6379"]
        redis_args += ["--requirepass", PASSWORD, "--dir", str(folder), "--save", ""]
        redis_args += ["--appendonly", "no", "--daemonize", "no"]
        running.start("redis", redis_args)
        web = [FLASK, "--app", APP, "run", "--host", "0.0.0.0", "--port", "5000"]
        running.start("web", web, HOSTS_BROKER=BROKER, HOSTS_SECRET_KEY=KEY)
        running.start_worker("w1")
        running.start_worker("w2")
        helpers.wait_for(lambda: lan.get("/ping"), timeout=30, interval=0.2, message="web")
        running.wait_workers("w1", "w2")
        yield running
    finally:
        running.stop_all()
        lan.delete()


@pytest.fixture
def lan(hosts: Hosts) -> Lan:
    """The network, both workers on it (a test that killed one gets it back)."""
    dead = [h for h in ("w1", "w2") if h not in hosts.procs or hosts.procs[h].poll() is not None]
    for host in dead:
        hosts.stop(host)
        hosts.start_worker(host)
    if dead:
        hosts.wait_workers(*dead)
    return hosts.lan


def submit(lan: Lan, count: int, seconds: float, queue: str | None = None) -> list[str]:
    path = f"/submit?n={count}&seconds={seconds}" + (f"&queue={queue}" if queue else "")
    ids: list[str] | None = lan.get(path)
    assert ids is not None and len(ids) == count, lan.log("web.log")
    return ids


def results(lan: Lan, ids: list[str], timeout: float = 30) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] | None = lan.get(f"/results?ids={','.join(ids)}", timeout + 5)
    assert out is not None, lan.log("web.log")
    return out


def test_web_redis_and_workers_each_run_on_their_own_host(lan):
    assert lan.get("/ping") == {"netns": lan.marker("web")}
    markers = {lan.marker(h) for h in ("lan", *ADDRESSES)}
    assert len(markers) == len(ADDRESSES) + 1  # six namespaces, none the test's own
    assert os.readlink("/proc/self/ns/net") not in markers


def test_submissions_are_spread_over_both_hosts(lan):
    ids = submit(lan, 8, 0.3)
    done = results(lan, ids)
    assert all("ok" in r for r in done), done
    assert {r["ok"]["netns"] for r in done} == {lan.marker("w1"), lan.marker("w2")}
    nodes = {r["ok"]["node"].split("@")[0] for r in done}
    assert nodes == {"w1", "w2"}
    for r in done:  # each call ran where its worker's node name says
        assert r["ok"]["netns"] == lan.marker(r["ok"]["node"].split("@")[0])


def test_a_worker_with_another_key_refuses_the_call_naming_itself(lan, hosts):
    hosts.start_worker("w3", key="another-key-of-32-bytes-or-more!!", queue="rogue")
    try:
        hosts.wait_workers("w3")
        ids = submit(lan, 1, 0, queue="rogue")
        (refused,) = results(lan, ids)
        mapped = lan.get("/map?n=2&queue=rogue", timeout=30)  # a map's chunk, the same
    finally:
        hosts.stop("w3")
    assert mapped is not None and len(mapped) == 2, lan.log("web.log")
    for call in mapped:
        assert call.get("error") == "SignatureError", call
        assert call["message"].startswith("worker w3@"), call
    assert refused.get("error") == "SignatureError", refused
    assert refused["message"].startswith("worker w3@"), refused
    assert "refused the call: payload signature does not match" in refused["message"]
    assert "CELERY_SIGNING_KEYS or SECRET_KEY" in refused["message"]
    assert ids[0] not in {i for i, _ in lan.get("/started") or []}  # never unpickled, never run


def test_killing_one_hosts_worker_loses_nothing_queued(lan, hosts):
    ids = submit(lan, 6, 1.0)
    w1 = lan.marker("w1")

    def w1_running() -> list[str]:
        return [i for i, where in lan.get("/started") or [] if i in ids and where == w1]

    helpers.wait_for(w1_running, timeout=20, interval=0.05, message="a call on w1")
    os.killpg(hosts.procs["w1"].pid, signal.SIGKILL)  # the host's worker dies hard
    hosts.stop("w1")
    on_w1 = w1_running()  # all it started; it was killed in the middle of the last
    done = results(lan, ids, timeout=40)
    assert all("ok" in r for r in done), done
    finished = {r["id"]: r["ok"]["netns"] for r in done}
    # The call w1 was running (acks_late: unacknowledged) ran again, on the survivor.
    assert any(finished[i] == lan.marker("w2") for i in on_w1), (on_w1, done)
