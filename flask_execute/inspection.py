"""``celery.inspect`` and ``celery.control``: Celery's control API, in-process.
(Filled in by the CLI/inspection work, issue 3.)"""

from __future__ import annotations


class InspectMixin:
    """Extension properties ``inspect`` and ``control``."""
