"""Signing of everything flask_execute unpickles, with :mod:`itsdangerous`.

Keys, first match wins:

1. ``CELERY_SIGNING_KEYS``: a string or a list of strings (the first signs, all
   verify, so keys can be rotated);
2. else derived from ``SECRET_KEY`` (signs) and Flask's ``SECRET_KEY_FALLBACKS``
   (verify only), each through HMAC-SHA256 with this module's own salt, so a signing
   key is never a session key;
3. else, for local development, a random key generated once into
   ``<instance_path>/flask_execute.key`` (mode 0600). Workers on the same machine load
   the same app and so the same file; workers on other hosts need 1. or 2.

A token is itsdangerous' ``<base64 data>.<base64 signature>``: URL-safe ASCII, so it
sits in a JSON string as is. The signature is HMAC-SHA256 under a key derived from the
signing key and a salt naming the token's context (call, result or error, and the
serializer), so a token made for one context never verifies in another.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import itsdangerous
from itsdangerous import BadSignature, base64_decode, base64_encode

from flask_execute.errors import ConfigurationError, SignatureError

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_execute")

# Derives our keys from SECRET_KEY and its fallbacks, so no session key ever signs a token.
_KEY_SALT = b"flask_execute.signing.v1"
# Prefix of every token's salt; the version changes whenever the token format does, so
# a token of another format fails as a bad signature instead of being misread.
_TOKEN_SALT = b"flask_execute.token.v2:"
KEY_FILE = "flask_execute.key"


def _signer(keys: Sequence[bytes], salt: bytes) -> itsdangerous.Signer:
    return itsdangerous.Signer(
        list(keys), salt=salt, key_derivation="hmac", digest_method=hashlib.sha256
    )


class Signer:
    """Signs and verifies byte strings with HMAC-SHA256, through itsdangerous.

    :param keys: raw keys; the first signs, every one verifies.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or not all(keys):
            raise ConfigurationError(
                "CELERY_SIGNING_KEYS is empty or holds an empty key: give at least one key."
            )
        # itsdangerous signs with the last key and verifies newest first; reversing keeps
        # our convention (first signs) and tries the signing key first.
        self._keys = tuple(reversed(keys))

    def sign(self, data: bytes, context: bytes) -> str:
        """Return ``data`` signed for ``context``, as URL-safe ASCII text."""
        # base64 first: the data are raw bytes (pickles), and a token must be ASCII text
        # that a JSON string carries as is.
        return _signer(self._keys, _TOKEN_SALT + context).sign(base64_encode(data)).decode()

    def verify(self, token: str, context: bytes) -> bytes:
        """Return the data inside ``token``; raise :exc:`SignatureError` if forged."""
        # Whatever JSON value the broker or backend held arrives here, not only strings.
        if not isinstance(token, str) or "." not in token:
            raise SignatureError("payload is not a flask_execute signed token")
        try:
            data = _signer(self._keys, _TOKEN_SALT + context).unsign(token)
        except BadSignature as exc:
            raise SignatureError(
                "payload signature does not match: it was forged, tampered with, or signed "
                "with another key (set CELERY_SIGNING_KEYS or SECRET_KEY identically for "
                "the app and every worker)"
            ) from exc
        return base64_decode(data)  # ours, since the signature matched: it decodes


def signing_keys(app: Flask) -> list[bytes]:
    """Return the signing keys for ``app`` (see the module docstring for the order)."""
    configured = app.config.get("CELERY_SIGNING_KEYS")
    if configured:
        return _key_list(configured)
    secret = app.config.get("SECRET_KEY")
    if secret:
        fallbacks = _key_list(app.config.get("SECRET_KEY_FALLBACKS") or [])
        # An empty fallback would derive a key anyone can compute: skip it.
        return [
            _signer([key], _KEY_SALT).derive_key() for key in _key_list(secret) + fallbacks if key
        ]
    return [_development_key(app.instance_path)]


def _key_list(value: Any) -> list[bytes]:
    # A lone string is one key, not a list of one-character keys.
    items = [value] if isinstance(value, (str, bytes)) else list(value)
    return [k if isinstance(k, bytes) else str(k).encode() for k in items]


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
