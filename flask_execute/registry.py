"""Registered and scheduled tasks: ``@celery.task`` and ``@celery.schedule``.
(Filled in by the registration work, issue 4.)"""

from __future__ import annotations


class TasksMixin:
    """Extension methods for registered and scheduled tasks."""
