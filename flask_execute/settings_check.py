"""Refuse dangerous or malformed configuration at ``init_app``, naming the key.

Called by the essential plugin ``core`` (:mod:`flask_execute.essentials`): signing keys
are checked with the Flask config, Celery settings once every plugin contributed to
them. What is refused, and why:

- a content type other than a data-only one (``pickle`` above all) in Celery's
  serializer or accept settings: Celery would decode such a message before our
  signature check, and unpickling is code execution;
- a signing key (``CELERY_SIGNING_KEYS``, else ``SECRET_KEY`` and its fallbacks)
  shorter than :data:`MIN_KEY_BYTES`: HMAC is only as strong as its key;
- a broker or result backend URL kombu or Celery would fail on at first use;
- a string where Celery or a transport needs a number (it fails deep in a worker);
- the ``rpc://`` result backend: only the submitting process could read a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from celery.app.backends import BACKEND_ALIASES
from celery.app.defaults import NAMESPACES, flatten
from kombu import Connection
from kombu.serialization import registry
from kombu.utils.url import maybe_sanitize_url, url_to_parts

from flask_execute.config import user_key
from flask_execute.errors import ConfigurationError

#: Shortest signing key accepted, in bytes (the development key is 32 random bytes).
MIN_KEY_BYTES = 32

#: Content types whose decoder builds plain data only, by kombu serializer name.
SAFE_SERIALIZERS = ("json", "msgpack", "yaml")

_SERIALIZER_SETTINGS = ("task_serializer", "result_serializer", "event_serializer")
_ACCEPT_SETTINGS = ("accept_content", "result_accept_content")
_URL_SETTINGS = ("broker_url", "broker_read_url", "broker_write_url", "result_backend")
# Celery's own option types say which settings are numbers; worker_concurrency is typed
# "any" there (None means one per CPU) but is a number too.
_NUMERIC_SETTINGS = frozenset(
    [key for key, opt in flatten(NAMESPACES) if opt.type in ("int", "float")]
    + ["worker_concurrency"]
)
_TRANSPORT_OPTIONS = ("broker_transport_options", "result_backend_transport_options")
# kombu keeps no table of its transport options' types: these are the numeric ones of
# its transports and of Connection's retry policy.
_NUMERIC_TRANSPORT_OPTIONS = frozenset(
    (
        "visibility_timeout",
        "polling_interval",
        "max_retries",
        "interval_start",
        "interval_step",
        "interval_max",
        "socket_timeout",
        "socket_connect_timeout",
        "health_check_interval",
        "max_connections",
        "wait_time_seconds",
        "connect_timeout",
        "timeout",
    )
)
_REDIS = ("redis", "rediss")
#: Result backends that deliver results as messages to the submitter only.
_MESSAGE_BACKENDS = ("rpc", "amqp")


def check_signing_keys(config: Mapping[str, Any]) -> None:
    """Refuse a signing key shorter than :data:`MIN_KEY_BYTES`, where it signs or
    verifies tokens: ``CELERY_SIGNING_KEYS``, else ``SECRET_KEY`` and
    ``SECRET_KEY_FALLBACKS``."""
    hint = (
        f"use at least {MIN_KEY_BYTES} random bytes, e.g. "
        "python -c 'import secrets; print(secrets.token_hex(32))'"
    )
    configured = config.get("CELERY_SIGNING_KEYS")
    if configured:
        sources = [("CELERY_SIGNING_KEYS", configured)]
    elif config.get("SECRET_KEY"):
        sources = [("SECRET_KEY", config["SECRET_KEY"])]
        sources.append(("SECRET_KEY_FALLBACKS", config.get("SECRET_KEY_FALLBACKS") or []))
    else:
        return  # the development key: 32 random bytes
    for key, value in sources:
        for entry in [value] if isinstance(value, (str, bytes)) else list(value):
            raw = entry if isinstance(entry, bytes) else str(entry).encode()
            if raw and len(raw) < MIN_KEY_BYTES:
                raise ConfigurationError(
                    f"{key} holds a {len(raw)}-byte key, too short to sign tasks "
                    f"(anyone could guess it and run code on the workers): {hint}"
                )


def check_celery_settings(config: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """Refuse unsafe serializers, malformed URLs and strings given for numbers.

    :param config: the Flask config, to name each key as the user spelled it.
    :param settings: the Celery settings after every plugin contributed.
    """
    spelled = _spellings(config)
    for name in _SERIALIZER_SETTINGS:
        if name in settings:
            _check_content(spelled(name), [settings[name]])
    for name in _ACCEPT_SETTINGS:
        value = settings.get(name)
        if value is not None:
            items = value.split(",") if isinstance(value, str) else list(value)
            _check_content(spelled(name), items)
    # Before the URLs: Celery 5 knows no amqp:// backend, which is no typo to report.
    _check_backend_kind(spelled("result_backend"), settings.get("result_backend"))
    for name in _URL_SETTINGS:
        value = settings.get(name)
        if value:
            for url in value.split(";") if isinstance(value, str) else list(value):
                _check_url(spelled(name), name, str(url).strip())
    for name, value in settings.items():
        if name in _NUMERIC_SETTINGS and isinstance(value, str):
            raise ConfigurationError(f"{spelled(name)} must be a number, not the string {value!r}")
    for name in _TRANSPORT_OPTIONS:
        for option, value in (settings.get(name) or {}).items():
            if option in _NUMERIC_TRANSPORT_OPTIONS and isinstance(value, str):
                raise ConfigurationError(
                    f"{spelled(name)}[{option!r}] must be a number, not the string {value!r}"
                )


def _spellings(config: Mapping[str, Any]) -> Any:
    """``name -> key``: the Flask key the user set for a Celery setting, else both
    spellings (the setting came from a plugin or Celery)."""
    return lambda name: user_key(config, name) or f"CELERY_{name.upper()} ({name})"


def _check_content(key: str, items: Iterable[Any]) -> None:
    safe = set(SAFE_SERIALIZERS) | {registry.name_to_type.get(n) for n in SAFE_SERIALIZERS}
    for item in items:
        if str(item).strip() not in safe:
            raise ConfigurationError(
                f"{key} holds {item!r}: only data-only content types are allowed "
                f"({', '.join(SAFE_SERIALIZERS)}). flask_execute signs pickled calls "
                "inside JSON messages; with pickle accepted, anyone who can write to the "
                "broker or the result backend runs code. Remove it."
            )


def _check_url(key: str, name: str, url: str) -> None:
    shown = _sanitized(url)
    if "://" not in url:
        if name == "result_backend" and _known_backend(url):
            return  # a bare backend alias: "rpc", "disabled", "cache"
        raise ConfigurationError(
            f"{key} is not a URL: {shown!r}; write it as scheme://host:port/..., "
            "e.g. redis://localhost:6379/0"
        )
    try:
        if name == "result_backend":
            parts = url_to_parts(url)
            scheme, db = parts.scheme, parts.path or ""
            if not _known_backend(scheme.partition("+")[0]):
                raise KeyError(f"no result backend named {scheme!r}")
        else:  # kombu's own parsing; it connects to nothing
            connection = Connection(url)
            scheme, db = str(connection.transport_cls), connection.virtual_host or ""
    except (KeyError, ValueError) as exc:
        reason = exc.args[0] if exc.args else exc
        raise ConfigurationError(f"{key} is malformed: {shown!r}: {reason}") from None
    db = db.strip("/")
    if scheme in _REDIS and db and not db.isdigit():
        raise ConfigurationError(
            f"{key} is malformed: {shown!r}: the path of a Redis URL is a database number, "
            f"not {db!r}"
        )


def _check_backend_kind(key: str, value: Any) -> None:
    scheme = str(value or "").partition("://")[0].partition("+")[0]
    if scheme in _MESSAGE_BACKENDS:
        raise ConfigurationError(
            f"{key} is {value!r}: the {scheme} result backend sends each result as a "
            "message to the one process that submitted the call, so no other process "
            "(celery.get, the status pages, a web process after a restart) can read it. "
            "Use a Redis result backend (redis://...), which every feature supports, or "
            "one that stores results (db+..., cache+..., file://...)."
        )


def _sanitized(url: str) -> str:
    try:
        return str(maybe_sanitize_url(url))
    except ValueError:  # kombu cannot parse it to mask the password: mask what may be one
        scheme, _, rest = url.rpartition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}" if "@" in rest else url


def _known_backend(name: str) -> bool:
    # Celery resolves a backend only by importing it; a membership test keeps init_app
    # free of imports. A dotted path names a backend class of the project's own.
    return name in BACKEND_ALIASES or "." in name or ":" in name
