"""The ``flask celery`` command group: Celery's own CLI with the Flask app loaded.

Every Celery subcommand (``worker``, ``beat``, ``flower``, ``inspect``, ``control``,
``purge``, ``call`` ...) is passed through untouched to Celery's click CLI, run in this
process with the Celery app of the Flask app the ``flask`` command loaded (``--app``,
``FLASK_APP``, ``app.py``/``wsgi.py``). Two commands are our own: ``cluster`` runs every
configured local service in the foreground, and ``status`` lists the workers online.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click
from flask import Flask
from flask.cli import NoAppException, ScriptInfo

from flask_execute import beat
from flask_execute.discovery import APP_ENV, app_import_path, celery_app_of, cwd_importable
from flask_execute.errors import ConfigurationError
from flask_execute.runtime import WORKER_ENV, AppState

if TYPE_CHECKING:
    import celery

    from flask_execute.extension import Celery

#: Exit status when no worker answers (``EX_UNAVAILABLE``, as ``celery status``).
EX_UNAVAILABLE = 69

#: Our own commands; every other name is looked up among Celery's.
_OWN = ("cluster", "status")


class CeleryGroup(click.Group):
    """Our commands, then every command of Celery's CLI (plugins such as flower too)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_celery_cli().commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        own = super().get_command(ctx, cmd_name)
        if own is not None:
            return own
        target = _celery_cli().commands.get(cmd_name)
        return PassThrough(cmd_name, target) if target is not None else None


class PassThrough(click.Command):
    """A Celery subcommand: every argument after its name goes to Celery unparsed.

    ``-h``/``--help`` therefore show Celery's own help for the command.
    """

    def __init__(self, name: str, target: click.Command) -> None:
        super().__init__(name, help=target.help, add_help_option=False)
        self.target = target

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.target.get_short_help_str(limit)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.args = list(args)
        return ctx.args

    def invoke(self, ctx: click.Context) -> Any:
        assert self.name is not None
        run_celery(ctx, self.name, ctx.args)


@click.group("celery", cls=CeleryGroup, context_settings={"help_option_names": ["-h", "--help"]})
def celery_group() -> None:
    """Run Celery with the Flask application loaded.

    \b
    flask celery worker -n foo@%h      a worker (any `celery worker` option)
    flask celery cluster               every configured service, in the foreground
    flask celery status                the workers online
    flask celery inspect stats         any `celery inspect` command
    flask celery control shutdown      any `celery control` command
    flask celery COMMAND --help        Celery's help for COMMAND
    """


def run_celery(ctx: click.Context, name: str, args: Sequence[str]) -> None:
    """Run ``celery <name> <args>`` in this process with the Flask app's Celery app.

    The process is marked as a worker (``FLASK_EXECUTE_WORKER=1``) before the app is
    loaded, so neither it nor the processes it forks ever start local services.
    """
    argv = ["--help" if arg == "-h" else arg for arg in args]
    wants_help = "--help" in argv
    os.environ[WORKER_ENV] = "1"
    app: Flask | None
    try:
        app = _load_app(ctx)
    except (NoAppException, click.ClickException):
        if not wants_help:
            raise
        app = None  # help needs no application
    default_map: dict[str, Any] | None = None
    if app is not None:
        state = AppState.of(app)
        state.in_worker = True
        default_map = {"app": state.celery_app}
        if not wants_help:
            argv = _with_defaults(name, argv, app, state.celery_app)
            if name == "worker" and ("--detach" in argv or "-D" in argv):
                _prepare_detach(app, name, argv)
    parent = ctx.parent.command_path if ctx.parent is not None else "flask celery"
    if app is not None and name == "control" and _remote_command(argv) == "shutdown":
        # Celery's `control shutdown` waits for replies a stopping worker never sends,
        # then fails; ours pings first and reports whom it stopped.
        argv.remove("shutdown")
        shutdown_command.main(
            args=argv, prog_name=f"{parent} control shutdown", obj=app, standalone_mode=True
        )
    _celery_cli().main(
        args=[name, *argv],
        prog_name=parent,
        default_map=default_map,
        auto_envvar_prefix="CELERY",
        standalone_mode=True,
    )


_F = TypeVar("_F", bound=Callable[..., Any])


def _reply_options(*, timeout: str, destination: str) -> Callable[[_F], _F]:
    """The ``-t/--timeout``, ``-d/--destination`` and ``-j/--json`` options."""

    def decorate(command: _F) -> _F:
        command = click.option(
            "-j", "--json", "as_json", is_flag=True, help="Print the result as JSON."
        )(command)
        command = click.option("-d", "--destination", help=destination)(command)
        return click.option(
            "-t", "--timeout", type=float, default=1.0, show_default=True, help=timeout
        )(command)

    return decorate


@click.command("shutdown", context_settings={"help_option_names": ["-h", "--help"]})
@_reply_options(
    timeout="Seconds to wait for the workers to answer a ping first.",
    destination="Comma-separated worker names to stop.",
)
@click.pass_context
def shutdown_command(
    ctx: click.Context, timeout: float, destination: str | None, as_json: bool
) -> None:
    """Shut down workers warmly: ``flask celery control shutdown -d foo@host``."""
    app: Flask = ctx.obj
    with app.app_context():
        replies = _extension(app).control.shutdown(destination=destination, timeout=timeout)
    if as_json:
        click.echo(json.dumps(replies, sort_keys=True))
    else:
        for node, reply in sorted(replies.items()):
            click.echo(f"-> {node}: OK\n        {reply['ok']}")
    if not replies:
        click.echo("Error: no worker replied within the time limit (-t/--timeout).", err=True)
        ctx.exit(EX_UNAVAILABLE)


@celery_group.command("status")
@_reply_options(
    timeout="Seconds to wait for replies.", destination="Comma-separated worker names to ask."
)
@click.pass_context
def status_command(
    ctx: click.Context, timeout: float, destination: str | None, as_json: bool
) -> None:
    """Show the workers online (``foo@host: OK``)."""
    app = _load_app(ctx)
    ext = _extension(app)
    with app.app_context():
        if destination is None and hasattr(ext, "status"):
            result: dict[str, str] = dict(ext.status(timeout=timeout))
        else:
            replies = ext.inspect.ping(destination=destination, timeout=timeout)
            result = {node: "OK" for node in replies}
    online = sum(1 for value in result.values() if value == "OK")
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        for node, value in sorted(result.items()):
            click.echo(f"-> {node}: {value}")
        click.echo(f"\n{online} {'node' if online == 1 else 'nodes'} online.")
    if not online:
        click.echo("Error: no worker replied within the time limit (-t/--timeout).", err=True)
        ctx.exit(EX_UNAVAILABLE)


@celery_group.command("cluster")
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

    Ctrl-C (or SIGTERM) stops all of them.
    """
    # This process supervises, it runs no task: it must be allowed to start services.
    os.environ.pop(WORKER_ENV, None)
    app = _load_app(ctx)
    ext = _extension(app)
    for method in ("start", "stop", "logs", "processes"):
        if not hasattr(ext, method):
            raise click.ClickException(
                f"this flask_execute has no local services API (celery.{method}): "
                "install a version with flask_execute.services"
            )
    code = 0
    with app.app_context(), _interrupt_once():
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
            click.echo("Stopping services ...")
            ext.stop()
            tail.pump()
    ctx.exit(code)


# -- helpers ---------------------------------------------------------------------------


def _celery_cli() -> click.Group:
    # Imported on use: Celery's CLI imports every subcommand (and plugin commands).
    from celery.bin.celery import celery

    group: click.Group = celery
    return group


def _load_app(ctx: click.Context) -> Flask:
    """The Flask app of the ``flask`` command (``--app``, ``FLASK_APP``, ``app.py``)."""
    info = ctx.ensure_object(ScriptInfo)
    cwd_importable()
    app = info.load_app()
    try:
        celery_app_of(app)
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from None
    return app


def _extension(app: Flask) -> Celery:
    ext: Celery = AppState.of(app).extension
    return ext


def _given(argv: Sequence[str], *options: str) -> bool:
    """Whether any of ``options`` (``-s``, ``--schedule``) is among ``argv``."""
    for arg in argv:
        for option in options:
            if (
                arg == option
                or arg.startswith(option + "=")
                or (len(option) == 2 and arg.startswith(option) and not arg.startswith("--"))
            ):
                return True
    return False


def _with_defaults(name: str, argv: list[str], app: Flask, celery_app: celery.Celery) -> list[str]:
    """Add the application's defaults to a service command the user did not override."""
    extra: list[str] = []
    level = app.config.get("CELERY_LOG_LEVEL")
    if name in ("worker", "beat") and level and not _given(argv, "-l", "--loglevel"):
        extra.append(f"--loglevel={level}")
    if name == "beat":
        # One beat per broker, its state beside the local services' (flask_execute.beat).
        if not _given(argv, "-S", "--scheduler"):
            extra.append(f"--scheduler={beat.SCHEDULER}")
        if not _given(argv, "-s", "--schedule"):
            extra.append(f"--schedule={beat.schedule_filename(AppState.of(app))}")
    if name == "flower":
        port = app.config.get("CELERY_FLOWER_PORT")
        address = app.config.get("CELERY_FLOWER_ADDRESS")
        if port and not _given(argv, "--port"):
            extra.append(f"--port={port}")
        if address and not _given(argv, "--address"):
            extra.append(f"--address={address}")
    return [*argv, *extra]


def _prepare_detach(app: Flask, name: str, argv: list[str]) -> None:
    # A detached worker re-executes `python -m celery <sys.argv[1:]>`: make that command
    # line `-A flask_execute.celery worker ...`, which loads this very app again.
    try:
        os.environ[APP_ENV] = app_import_path(app)
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from None
    sys.argv = [sys.argv[0], "-A", "flask_execute.celery", name, *argv]


def _remote_command(argv: Sequence[str]) -> str | None:
    """The COMMAND of ``inspect|control [OPTIONS] COMMAND``: the first positional."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-t", "--timeout", "-d", "--destination"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


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
def _interrupt_once() -> Iterator[None]:
    """SIGINT and SIGTERM raise :exc:`KeyboardInterrupt` once while the block runs.

    Later signals are ignored, so a second Ctrl-C cannot cut the services' shutdown
    short (the services' own safety net still covers a SIGKILL).
    """
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
