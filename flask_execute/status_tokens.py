"""Status tokens: what names a task, or a pool of tasks, over HTTP.

Anything served over HTTP is keyed by a token, never by a raw task id: a token is a
capability, signed with the application's signing keys (those of
:mod:`flask_execute.signing`) under a salt of its own that names the application, and
it carries its signing time, so the status endpoint can refuse it once it is older
than ``CELERY_STATUS_MAX_AGE``. A pool's token names a Celery group result that holds
the ids of its calls (saved through Celery's own ``GroupResult.save``), so the token
stays short however many calls the pool has.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Literal

from itsdangerous import BadData, URLSafeTimedSerializer

#: What a token names: one task, or a pool saved as a Celery group.
Kind = Literal["task", "pool"]

_KEYS: dict[str, Kind] = {"t": "task", "p": "pool"}


class StatusTokens:
    """Makes and opens the status tokens of one application.

    :param keys: the application's signing keys; the first signs, all verify.
    :param app_name: the application's name, part of the salt, so that a token made by
        one application never opens in another, even with the same keys.
    """

    def __init__(self, keys: Sequence[bytes], app_name: str) -> None:
        # itsdangerous signs with the last key and verifies with every one.
        self._serializer = URLSafeTimedSerializer(
            list(reversed(keys)),
            salt=f"flask_execute.status:{app_name}",
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    def make(self, kind: Kind, value: str) -> str:
        """The token of task ``value`` (``kind="task"``) or of the pool saved as group
        ``value`` (``kind="pool"``)."""
        key = "t" if kind == "task" else "p"
        token: str = self._serializer.dumps({key: value})
        return token

    def open(self, token: str, max_age: float | None) -> tuple[Kind, str] | None:
        """What ``token`` names, or ``None`` if it is forged, made by another
        application, malformed, or older than ``max_age`` seconds."""
        try:
            data = self._serializer.loads(token, max_age=_whole(max_age))
        except BadData:
            return None
        if not isinstance(data, dict) or len(data) != 1:
            return None
        ((key, value),) = data.items()
        kind = _KEYS.get(key)
        if kind is None or not isinstance(value, str):
            return None
        return kind, value


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else math.ceil(seconds)
