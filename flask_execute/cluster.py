"""``flask celery cluster``: every configured local service in the foreground.

Starts the services through the extension (``celery.start()``), streams their log
files to the terminal, and stops them all on Ctrl-C or SIGTERM: warmly, so that running
tasks finish (``CELERY_STOP_TIMEOUT``); a second Ctrl-C cancels them at once (a cold
shutdown, as a second Ctrl-C does to ``celery worker``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

import click

from flask_execute.discovery import load_cli_app
from flask_execute.runtime import WORKER_ENV, AppState

if TYPE_CHECKING:
    from flask_execute.extension import Celery
    from flask_execute.processes import ServiceProcess


@click.command("cluster")
@click.option(
    "-t",
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait for the services to be ready [default: CELERY_START_TIMEOUT].",
)
@click.pass_context
def cluster_command(ctx: click.Context, timeout: float | None) -> None:
    """Start every configured service (workers, flower, beat) and stream their logs.

    Ctrl-C (or SIGTERM) stops all of them, letting running tasks finish; Ctrl-C again
    cancels the tasks still running.
    """
    # This process supervises, it runs no task: it must be allowed to start services.
    os.environ.pop(WORKER_ENV, None)
    app = load_cli_app(ctx)
    state = AppState.of(app)
    ext: Celery = state.extension
    stopping: list[ServiceProcess] = []

    def hurry() -> None:
        click.echo("Cancelling the running tasks ...", err=True)
        for process in stopping:
            process.cold_shutdown()

    code = 0
    with app.app_context(), _interrupt_once(again=hurry):
        tail = _Tail(ext.logs)
        try:
            click.echo(f"Starting {', '.join(tail.names) or 'no services'} ...")
            ext.start(timeout=timeout)
            started = dict(ext.processes)
            for name, pid in sorted(started.items()):
                click.echo(f"{_prefix(name)} running, pid {pid}, log {tail.paths[name]}")
            while started:
                tail.pump()
                alive = ext.processes
                for gone in sorted(set(started) - set(alive)):
                    click.echo(f"{_prefix(gone)} exited", err=True)
                    del started[gone]
                _POLL.wait(0.2)  # log files have no change notification worth a thread
            click.echo("Every service exited.", err=True)
            code = 1
        except KeyboardInterrupt:
            pass  # Ctrl-C or SIGTERM: stop everything, exit 0
        except Exception as error:
            tail.pump()
            click.echo(f"Error: {error}", err=True)
            code = 1
        finally:
            if state.supervisor is not None:
                stopping.extend(state.supervisor.running().values())
            seconds = app.config.get("CELERY_STOP_TIMEOUT")
            wait = f"running tasks get {seconds:g}s to finish; " if seconds else ""
            click.echo(f"Stopping services ({wait}Ctrl-C again cancels them) ...")
            ext.stop()
            tail.pump()
    ctx.exit(code)


def _prefix(name: str) -> str:
    return click.style(f"[{name}]", fg="cyan", bold=True)


class _Tail:
    """Follows the services' log files from their current end, line by line."""

    def __init__(self, logs: dict[str, str]) -> None:
        self.paths = dict(logs)
        self.names = sorted(self.paths)
        self._offsets = {name: _size(path) for name, path in self.paths.items()}
        self._partial = dict.fromkeys(self.paths, b"")

    def pump(self) -> None:
        for name in self.names:
            for line in self._read(name):
                click.echo(f"{_prefix(name)} {line}")

    def _read(self, name: str) -> Iterator[str]:
        path = self.paths[name]
        size = _size(path)
        if size < self._offsets[name]:
            self._offsets[name] = 0  # the log was truncated or replaced
        if size == self._offsets[name]:
            return
        with open(path, "rb") as log:
            log.seek(self._offsets[name])
            data = self._partial[name] + log.read()
            self._offsets[name] = log.tell()
        *lines, self._partial[name] = data.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace").rstrip("\r")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


#: Never set: a sleep that a signal handler's exception interrupts.
_POLL = threading.Event()


@contextlib.contextmanager
def _interrupt_once(again: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM raise :exc:`KeyboardInterrupt` once while the block runs.

    The next signal calls ``again`` instead, and later ones are ignored: no signal
    interrupts the services' shutdown itself (their lifeline still covers a SIGKILL).
    """
    fired = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        fired += 1
        if fired == 1:
            raise KeyboardInterrupt
        if fired == 2:
            again()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
