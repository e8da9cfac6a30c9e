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

A token is ``<version>.<signed part>``, URL-safe ASCII that a JSON string carries as
is. The version (:data:`TOKEN_VERSION`) comes first and is read before anything else,
so a process meeting a token of another format says so instead of misreading it. The
signed part is itsdangerous' :class:`~itsdangerous.TimestampSigner` output over
``<claims>.<data>``: the claims name the task id the token belongs to and, for a
message with ``countdown``/``eta``, when it is due; the timestamp is the signing time.
The signature is HMAC-SHA256 under a key derived from the signing key and a salt naming
the format version and the token's context (call, result or error, and the
serializer), so a token made for one context never verifies in another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import itsdangerous
from itsdangerous import BadSignature, base64_decode, base64_encode

from flask_execute.errors import ConfigurationError, SignatureError

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_execute")

#: The token format this release writes and reads, first in every token. It changes
#: whenever the format does; a token of another version is refused with a message that
#: says so, before its signature is even checked.
TOKEN_VERSION = "v3"

# Derives our keys from SECRET_KEY and its fallbacks, so no session key ever signs a token.
_KEY_SALT = b"flask_execute.signing.v1"
# Prefix of every token's salt: the version is signed too, not only written in front.
_TOKEN_SALT = f"flask_execute.token.{TOKEN_VERSION}:".encode()
_VERSION_LIKE = re.compile(r"v[0-9]{1,4}")
KEY_FILE = "flask_execute.key"


def _signer(keys: Sequence[bytes], salt: bytes) -> itsdangerous.TimestampSigner:
    """itsdangerous' signer for ``salt``, with its "hmac" key derivation done once.

    The keys are derived here as itsdangerous derives them (HMAC of the salt under the
    key) and handed over with no further derivation: the signatures are the same as
    with ``key_derivation="hmac"``, without two HMACs per key on every call.
    """
    derived = [hmac.new(key, salt, hashlib.sha256).digest() for key in keys]
    return itsdangerous.TimestampSigner(
        derived, salt=salt, key_derivation="none", digest_method=hashlib.sha256
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
        self._signers: dict[bytes, itsdangerous.TimestampSigner] = {}

    def _for(self, context: bytes) -> itsdangerous.TimestampSigner:
        signer = self._signers.get(context)
        if signer is None:
            signer = self._signers[context] = _signer(self._keys, _TOKEN_SALT + context)
        return signer

    def sign(self, data: bytes, context: bytes, *, task_id: str, due: float | None = None) -> str:
        """Return ``data`` signed for ``context`` and task ``task_id``, as ASCII text.

        :param due: when the task may run at the earliest (POSIX time; ``countdown`` or
            ``eta``): a token's age counts from the later of that and its signing time.
        """
        claims: dict[str, Any] = {"id": task_id}
        if due is not None:
            claims["due"] = math.ceil(due)
        # base64: the data are raw bytes (pickles), and a token must be ASCII text that a
        # JSON string carries as is.
        value = base64_encode(json.dumps(claims).encode()) + b"." + base64_encode(data)
        signed = self._for(context).sign(value).decode()
        return f"{TOKEN_VERSION}.{signed}"

    def verify(
        self, token: str, context: bytes, *, task_id: str, max_age: float | None = None
    ) -> bytes:
        """Return the data inside ``token``; raise :exc:`SignatureError` unless it is ours,
        of this format version, made for ``task_id`` and (with ``max_age``) fresh."""
        # Whatever JSON value the broker or backend held arrives here, not only strings.
        if not isinstance(token, str) or "." not in token:
            raise SignatureError("payload is not a flask_execute signed token")
        version, _, signed = token.partition(".")
        if version != TOKEN_VERSION:
            raise SignatureError(_version_message(version))
        try:
            value, signed_at = self._for(context).unsign(signed, return_timestamp=True)
        except BadSignature as exc:
            raise SignatureError(
                "payload signature does not match: it was forged, tampered with, or signed "
                "with another key (set CELERY_SIGNING_KEYS or SECRET_KEY identically for "
                "the app and every worker)"
            ) from exc
        # Ours, since the signature matched: it decodes.
        header, _, data = value.partition(b".")
        claims = json.loads(base64_decode(header))
        if claims["id"] != task_id:
            raise SignatureError(
                f"token was made for task {claims['id']!r}, not {task_id!r}: a message or "
                "result copied under another task id (a replay) is refused"
            )
        if max_age is not None:
            # Our own check, not unsign(max_age=): itsdangerous also refuses a timestamp
            # in the future, which clock skew between hosts would trip.
            start = max(signed_at.timestamp(), claims.get("due", 0))
            age = time.time() - start
            if age > max_age:
                raise SignatureError(
                    f"token expired: {age:.0f}s old (counted from its signing time or, "
                    f"for a countdown/eta, from when it was due), over "
                    f"CELERY_TOKEN_MAX_AGE ({max_age:g}s): a replayed message, or one "
                    "that waited too long in the queue (raise CELERY_TOKEN_MAX_AGE if "
                    "tasks legitimately wait that long)"
                )
        return base64_decode(data)


def _version_message(version: str) -> str:
    if _VERSION_LIKE.fullmatch(version):
        return (
            f"token format {version} is not the format this flask_execute reads "
            f"({TOKEN_VERSION}): the process that made it runs another flask_execute "
            "release. Upgrade the workers and the web processes together, then submit "
            "again; the token was not unpickled"
        )
    return (
        "payload is not a flask_execute token of a known format (tokens older than "
        f"format {TOKEN_VERSION} carry no version): upgrade the workers and the web "
        "processes together; the payload was not unpickled"
    )


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


#: Development key files this process already warned about.
_WARNED: set[str] = set()


def _development_key(folder: str) -> bytes:
    path = os.path.join(folder, KEY_FILE)
    if path not in _WARNED:
        _WARNED.add(path)
        logger.warning(
            "no CELERY_SIGNING_KEYS or SECRET_KEY is set: tasks are signed with the "
            "development key in %s, which only this machine has. Workers on other hosts "
            "refuse its tasks; set SECRET_KEY (or CELERY_SIGNING_KEYS) before deploying",
            path,
        )
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
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    with open(path, "rb") as fh:
        return fh.read()
