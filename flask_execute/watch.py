"""``flask celery watch TASK_ID``: a task's progress, live, until it ends.

On a terminal the progress is click's progress bar (a counter when the call reports no
total); piped, one line per change (``3/10 30%``). At the end the task's state and its
result or error are printed; the exit status is 0 only for ``SUCCESS``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click

from flask_execute.discovery import load_cli_app
from flask_execute.errors import UnknownTaskError
from flask_execute.runtime import WORKER_ENV, AppState

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

    from flask_execute.futures import Future
    from flask_execute.progress import Progress

#: Seconds between two redraws while nothing changes (click's bar shows elapsed time).
REDRAW = 1.0


class ProgressView:
    """Draws the progress of one task: a bar on a terminal, lines otherwise.

    :param label: shown before the bar.
    :param tty: whether standard output is a terminal.
    """

    def __init__(self, label: str, tty: bool) -> None:
        self.label = label
        self.tty = tty
        self._bar: ProgressBar[Any] | None = None
        self._shown: Progress | None = None

    def show(self, progress: Progress | None) -> None:
        """Draw ``progress`` if it changed."""
        if progress is None or progress == self._shown:
            if self._bar is not None:
                self._bar.render_progress()
            return
        self._shown = progress
        if not self.tty:
            click.echo(describe(progress))
        elif progress.total is None:
            click.echo(f"\r{self.label} {describe(progress)}", nl=False)
        else:
            self._draw_bar(progress)

    def _draw_bar(self, progress: Progress) -> None:
        total = int(progress.total or 0)
        if self._bar is None:
            self._bar = click.progressbar(length=total, label=self.label, show_pos=True)
            self._bar.__enter__()
        self._bar.length = total
        self._bar.update(int(progress.done) - self._bar.pos)

    def close(self) -> None:
        """End the bar's line."""
        if self._bar is not None:
            self._bar.render_finish()
        elif self.tty and self._shown is not None:
            click.echo()


def describe(progress: Progress) -> str:
    """``3/10 30%`` (``3`` without a total), then the report's own meta."""
    text = f"{progress.done}"
    if progress.total is not None and progress.fraction is not None:
        text += f"/{progress.total} {progress.fraction:.0%}"
    if progress.meta:
        text += " " + " ".join(f"{key}={value}" for key, value in sorted(progress.meta.items()))
    return text


def follow(future: Future, view: ProgressView, timeout: float | None) -> bool:
    """Redraw ``view`` on every change of ``future`` until it is done (``False`` if
    ``timeout`` seconds passed first)."""
    changed = threading.Event()
    unsubscribe = future.subscribe(changed.set)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not future.done():
            left = REDRAW if deadline is None else min(REDRAW, deadline - time.monotonic())
            if left <= 0:
                return False
            changed.wait(left)
            changed.clear()
            view.show(future.progress)
    finally:
        unsubscribe()
    view.show(future.progress)
    return True


@click.command("watch")
@click.argument("task_id")
@click.option("-t", "--timeout", type=float, default=None, help="Give up after this many seconds.")
@click.pass_context
def watch_command(ctx: click.Context, task_id: str, timeout: float | None) -> None:
    """Show a task's progress live, then its result: ``flask celery watch TASK_ID``.

    The exit status is 0 when the task succeeded, 1 otherwise.
    """
    # Watching never starts anything: like a worker, this process runs no services.
    os.environ[WORKER_ENV] = "1"
    app = load_cli_app(ctx)
    state = AppState.of(app)
    state.in_worker = True
    with app.app_context():
        try:
            future = state.extension.get(task_id)
        except UnknownTaskError as error:
            raise click.ClickException(str(error)) from None
        view = ProgressView(future.name or task_id, sys.stdout.isatty())
        finished = follow(future, view, timeout)
        view.close()
        if not finished:
            raise click.ClickException(
                f"task {task_id} is still {future.state} after {timeout} seconds"
            )
        report(ctx, future)


def report(ctx: click.Context, future: Future) -> None:
    """Print how ``future`` ended; exit with status 1 unless it succeeded."""
    if future.cancelled():
        click.echo("REVOKED")
        ctx.exit(1)
    error = future.exception(0)
    if error is not None:
        click.echo(f"FAILURE {type(error).__name__}: {error}")
        ctx.exit(1)
    click.echo(f"SUCCESS {future.result(0)!r}")
