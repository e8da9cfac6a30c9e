"""Default plugin ``workers``: the local workers of ``CELERY_WORKERS``.

``CELERY_WORKERS`` is a number of workers, a list of names, or a mapping of name to
``celery worker`` options (``concurrency``, ``loglevel``, ``pidfile``, ``queues`` ...,
any option of ``celery worker``, spelled as its long name with underscores). Options
are checked against Celery's own worker command, so a misspelled one fails at
``init_app``.

Blocked, no local worker is described: the other services still start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click
from celery.utils.nodenames import host_format

from flask_execute.errors import ConfigurationError
from flask_execute.markers import hookimpl
from flask_execute.services import Service

if TYPE_CHECKING:
    from flask import Flask

KEYS: dict[str, Any] = {
    # A number of workers, a list of names, or {name: {worker option: value}}.
    "CELERY_WORKERS": 1,
}

#: Options we never pass on: the extension sets them itself.
_RESERVED = {"hostname", "detach", "app"}

#: Defaults for local development workers; a worker's own options win.
#: Mingle waits a whole second for other workers' replies at start-up and gossip
#: chatters on every event: neither helps a handful of local workers.
_DEFAULT_FLAGS = {"without_mingle": "--without-mingle", "without_gossip": "--without-gossip"}


def worker_options() -> dict[str, click.Parameter]:
    """Options of ``celery worker``, by parameter name."""
    # Imported here: the worker command pulls in most of Celery's worker machinery,
    # which init_app needs only for workers configured with options.
    from celery.bin.worker import worker as worker_command

    return {p.name: p for p in worker_command.params if p.name and p.name not in _RESERVED}


def configured_workers(config: Mapping[str, Any], app_name: str) -> dict[str, dict[str, Any]]:
    """``CELERY_WORKERS`` as ``{name: options}``; raise on a value of the wrong shape."""
    value = config["CELERY_WORKERS"]
    if isinstance(value, bool):
        raise _bad(value)
    if isinstance(value, int):
        if value < 0:
            raise _bad(value)
        prefix = _slug(app_name)
        return {f"{prefix}{i}" if value > 1 else prefix: {} for i in range(1, value + 1)}
    if isinstance(value, (list, tuple)):
        if not all(isinstance(n, str) and n for n in value) or len(set(value)) != len(value):
            raise _bad(value)
        return {name: {} for name in value}
    if isinstance(value, Mapping):
        if not all(isinstance(n, str) and n for n in value):
            raise _bad(value)
        for name, options in value.items():
            if options is None:
                continue
            if not isinstance(options, Mapping):
                raise ConfigurationError(
                    f"CELERY_WORKERS[{name!r}] must be a dict of worker options, not {options!r}"
                )
        return {name: dict(options or {}) for name, options in value.items()}
    raise _bad(value)


def _bad(value: Any) -> ConfigurationError:
    return ConfigurationError(
        f"CELERY_WORKERS must be a number of workers (2), a list of names (['foo', 'bar']) "
        f"or a dict of names to worker options ({{'foo': {{'concurrency': 2}}}}), not {value!r}"
    )


def _slug(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.rsplit(".", 1)[-1])
    return cleaned.strip("-") or "worker"


def option_args(name: str, options: Mapping[str, Any]) -> list[str]:
    """Turn one worker's options into ``celery worker`` arguments."""
    args = [flag for key, flag in _DEFAULT_FLAGS.items() if key not in options]
    if not options:
        return args
    known = worker_options()
    for key, value in options.items():
        param = known.get(key)
        if param is None or not isinstance(param, click.Option):
            raise ConfigurationError(
                f"CELERY_WORKERS[{name!r}] has an unknown worker option {key!r}; valid "
                f"options: {', '.join(sorted(known))}"
            )
        flag = max(param.opts, key=len)
        if param.is_flag:
            if value:
                args.append(flag)
            continue
        if value is None:
            continue
        if isinstance(value, (list, tuple, set)):
            value = ",".join(str(v) for v in value)
        args.append(f"{flag}={value}")
    return args


@hookimpl(trylast=True)
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    return KEYS


@hookimpl
def flask_execute_validate_config(app: Flask, config: Mapping[str, Any]) -> None:
    workers = configured_workers(config, app.name)
    if not workers and config.get("CELERY_START_LOCAL_WORKERS"):
        raise ConfigurationError(
            f"CELERY_WORKERS is {config['CELERY_WORKERS']!r}: no local worker would start, "
            "so nothing submitted would ever run. Give at least one worker, or set "
            "CELERY_START_LOCAL_WORKERS=False and run workers yourself (flask celery worker)"
        )
    for name, options in workers.items():
        if "@" in name:
            raise ConfigurationError(
                f"CELERY_WORKERS: give worker names without a host ({name.split('@')[0]!r}, "
                f"not {name!r}); the host name is added as @%h"
            )
        option_args(name, options)


@hookimpl
def flask_execute_describe_services(app: Flask) -> list[Service]:
    services = []
    for name, options in configured_workers(app.config, app.name).items():
        argv = ["worker", f"--hostname={name}@%h", *option_args(name, options)]
        services.append(Service(name, "worker", argv, node=host_format(f"{name}@%h")))
    return services
