"""HMAC signing of everything flask_execute unpickles.

Keys, first match wins:

1. ``CELERY_SIGNING_KEYS``: a string or a list of strings (the first signs, all
   verify, so keys can be rotated);
2. else derived from ``SECRET_KEY`` with HMAC-SHA256 and this module's own salt, so
   the signing key is never the session key itself;
3. else, for local development, a random key generated once into
   ``<instance_path>/flask_execute.key`` (mode 0600). Workers on the same machine load
   the same app and so the same file; workers on other hosts need 1. or 2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flask_execute.errors import ConfigurationError, SignatureError

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_execute")

_SALT = b"flask_execute.signing.v1"
_DIGEST = hashlib.sha256
_MAC_SIZE = 32
KEY_FILE = "flask_execute.key"


class Signer:
    """Signs and verifies byte strings with HMAC-SHA256.

    :param keys: raw keys; the first signs, every one verifies.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigurationError("CELERY_SIGNING_KEYS is empty: give at least one key.")
        self._keys = tuple(keys)

    def sign(self, data: bytes, context: bytes) -> str:
        """Return ``data`` with its MAC, as URL-safe base64 text."""
        mac = hmac.new(self._keys[0], context + data, _DIGEST).digest()
        return base64.urlsafe_b64encode(mac + data).decode("ascii")

    def verify(self, token: str, context: bytes) -> bytes:
        """Return the data inside ``token``; raise :exc:`SignatureError` if forged."""
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
        except (binascii.Error, ValueError, AttributeError) as exc:
            raise SignatureError("payload is not a flask_execute signed token") from exc
        mac, data = raw[:_MAC_SIZE], raw[_MAC_SIZE:]
        for key in self._keys:
            if hmac.compare_digest(mac, hmac.new(key, context + data, _DIGEST).digest()):
                return data
        raise SignatureError(
            "payload signature does not match: it was forged, tampered with, or signed "
            "with another key (set CELERY_SIGNING_KEYS or SECRET_KEY identically for the "
            "app and every worker)"
        )


def signing_keys(app: Flask) -> list[bytes]:
    """Return the signing keys for ``app`` (see the module docstring for the order)."""
    configured = app.config.get("CELERY_SIGNING_KEYS")
    if configured:
        items = [configured] if isinstance(configured, (str, bytes)) else list(configured)
        return [k if isinstance(k, bytes) else str(k).encode() for k in items]
    secret = app.config.get("SECRET_KEY")
    if secret:
        raw = secret if isinstance(secret, bytes) else str(secret).encode()
        return [hmac.new(raw, _SALT, _DIGEST).digest()]
    return [_development_key(app.instance_path)]


def _development_key(folder: str) -> bytes:
    path = os.path.join(folder, KEY_FILE)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        pass
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic: whoever links first wins, the others read theirs
        logger.info(
            "flask_execute: no CELERY_SIGNING_KEYS or SECRET_KEY set; generated a "
            "development signing key in %s (configure one for multi-host workers)",
            path,
        )
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    with open(path, "rb") as fh:
        return fh.read()
