"""The ``flask celery`` command group: Celery's own CLI with the Flask app loaded.

Every Celery subcommand (``worker``, ``beat``, ``flower``, ``inspect``, ``control``,
``purge``, ``call`` ...) is passed through untouched to Celery's click CLI, run in this
process with the Celery app of the Flask app the ``flask`` command loaded (``--app``,
``FLASK_APP``, ``app.py``/``wsgi.py``). Two commands are our own: ``cluster`` runs every
configured local service in the foreground, ``status`` lists the workers online, and
``watch`` follows one task's progress to its end.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click
from flask import Flask
from flask.cli import NoAppException

from flask_execute.cluster import cluster_command
from flask_execute.discovery import APP_ENV, app_import_path, load_cli_app
from flask_execute.errors import BrokerUnavailable, ConfigurationError
from flask_execute.runtime import WORKER_ENV, AppState
from flask_execute.watch import watch_command

if TYPE_CHECKING:
    from flask_execute.extension import Celery

#: Help options of every ``flask celery`` command, Celery's included.
HELP_OPTIONS = ("-h", "--help")

#: Exit status when no worker answers (``EX_UNAVAILABLE``, as ``celery status``).
EX_UNAVAILABLE = 69

#: Our own commands; every other name is looked up among Celery's.
_OWN = ("cluster", "status", "watch")


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


@click.group("celery", cls=CeleryGroup, context_settings={"help_option_names": list(HELP_OPTIONS)})
def celery_group() -> None:
    """Run Celery with the Flask application loaded.

    \b
    flask celery worker -n foo@%h      a worker (any `celery worker` option)
    flask celery cluster               every configured service, in the foreground
    flask celery status                the workers online
    flask celery watch TASK_ID         a task's progress, live, then its result
    flask celery inspect stats         any `celery inspect` command
    flask celery control shutdown      any `celery control` command
    flask celery COMMAND --help        Celery's help for COMMAND
    """


def run_celery(ctx: click.Context, name: str, args: Sequence[str]) -> None:
    """Run ``celery <name> <args>`` in this process with the Flask app's Celery app.

    The process is marked as a worker (``FLASK_EXECUTE_WORKER=1``) before the app is
    loaded, so neither it nor the processes it forks ever start local services.
    """
    argv = list(args)
    wants_help = any(arg in HELP_OPTIONS for arg in argv)
    os.environ[WORKER_ENV] = "1"
    app: Flask | None
    try:
        app = load_cli_app(ctx)
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
            target = _celery_cli().commands[name]
            default_map[name], extra = _defaults(app, name, target, argv)
            argv = [*argv, *extra]
            if name == "worker" and ("--detach" in argv or "-D" in argv):
                _prepare_detach(app, name, argv)
    parent = ctx.parent.command_path if ctx.parent is not None else "flask celery"
    if app is not None and name == "control" and _remote_command(argv) == "shutdown":
        # Celery's `control shutdown` waits for replies a stopping worker never sends,
        # then fails; ours pings first and reports whom it stopped.
        shutdown_command.main(
            args=argv, prog_name=f"{parent} control", obj=app, standalone_mode=True
        )
    _celery_cli().main(
        args=[name, *argv],
        prog_name=parent,
        default_map=default_map,
        auto_envvar_prefix="CELERY",
        help_option_names=list(HELP_OPTIONS),  # inherited by every Celery subcommand
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


@click.command("shutdown", context_settings={"help_option_names": list(HELP_OPTIONS)})
@click.argument("command", type=click.Choice(["shutdown"]))
@_reply_options(
    timeout="Seconds to wait for the workers to answer a ping first.",
    destination="Comma-separated worker names to stop.",
)
@click.pass_context
def shutdown_command(
    ctx: click.Context, command: str, timeout: float, destination: str | None, as_json: bool
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
    # Asking never starts anything: this process runs no services (as a worker does
    # not), and so does not probe for them either.
    os.environ[WORKER_ENV] = "1"
    app = load_cli_app(ctx)
    AppState.of(app).in_worker = True
    ext = _extension(app)
    try:
        with app.app_context():
            if destination is None and hasattr(ext, "status"):
                result: dict[str, str] = dict(ext.status(timeout=timeout))
            else:
                replies = ext.inspect.ping(destination=destination, timeout=timeout)
                result = {node: "OK" for node in replies}
    except BrokerUnavailable as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EX_UNAVAILABLE)
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


# -- helpers ---------------------------------------------------------------------------


celery_group.add_command(cluster_command)
celery_group.add_command(watch_command)


def _celery_cli() -> click.Group:
    # Imported on use: Celery's CLI imports every subcommand (and plugin commands).
    from celery.bin.celery import celery

    group: click.Group = celery
    return group


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


def _defaults(
    app: Flask, name: str, target: click.Command, argv: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """The plugins' defaults for ``flask celery <name>``
    (:func:`~flask_execute.hookspecs.flask_execute_add_command_defaults`).

    :return: click's ``default_map`` for the command's own options, and arguments to
        add for options it takes unparsed (flower hands its argv to tornado, which
        click's default_map cannot reach); an option given in ``argv`` wins.
    """
    defaults = AppState.of(app).pm.add_command_defaults(app).get(name, {})
    params = {param.name for param in target.params}
    default_map = {key: value for key, value in defaults.items() if key in params}
    extra = [
        f"--{key}={value}"
        for key, value in defaults.items()
        if key not in params and value is not None and not _given(argv, f"--{key}")
    ]
    return default_map, extra


def _prepare_detach(app: Flask, name: str, argv: list[str]) -> None:
    # A detached worker re-executes `python -m celery <sys.argv[1:]>`: make that command
    # line `-A flask_execute.celery worker ...`, which loads this very app again.
    try:
        os.environ[APP_ENV] = app_import_path(app)
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from None
    sys.argv = [sys.argv[0], "-A", "flask_execute.celery", name, *argv]


def _remote_command(argv: Sequence[str]) -> str | None:
    """The COMMAND of ``control [OPTIONS] COMMAND [ARGS]``, as Celery's own command
    parses it (click's parser, no callbacks run)."""
    target = _celery_cli().commands["control"]
    with click.Context(target, info_name="control", resilient_parsing=True) as ctx:
        options, _args, _order = target.make_parser(ctx).parse_args(list(argv))
    command = options.get("command")
    return command if isinstance(command, str) else None
