"""The ``flask celery`` command group. (Filled in by the CLI work, issue 3.)"""

from __future__ import annotations

import click


@click.group("celery")
def celery_group() -> None:
    """Run Celery with the Flask application loaded."""
