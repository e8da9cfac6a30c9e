"""``celery.inspect`` and ``celery.control``: Celery's remote control API, in-process.

Both proxies broadcast through the Celery app of the current Flask app
(:attr:`celery.Celery.control`) and return a dict keyed by worker name, ``{}`` when no
worker answered in time. Nothing here spawns a process or parses CLI output.

::

    celery.inspect.ping()                                   # {'foo@host': {'ok': 'pong'}}
    celery.inspect.stats(destination=["foo@host"], timeout=2)
    celery.control.pool_grow(1, destination="foo@host")     # {'foo@host': {'ok': ...}}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import celery

#: How long to wait for replies when no ``timeout`` is given (Celery's own default).
DEFAULT_TIMEOUT = 1.0

#: What :meth:`Control.shutdown` reports for each worker it asked to stop.
SHUTDOWN_REPLY = {"ok": "shutdown requested"}

Destination = str | Iterable[str] | None


def commands(kind: str) -> list[str]:
    """Return the remote commands of ``kind`` (``"inspect"`` or ``"control"``).

    The list is Celery's own registry of worker commands (``Panel.meta``), so commands
    registered with ``celery.worker.control.inspect_command`` / ``control_command`` in
    this process are included.
    """
    from celery.worker.control import Panel

    return sorted(name for name, meta in Panel.meta.items() if meta.type == kind and meta.visible)


def _destination(value: Destination) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return list(value)


class _Remote:
    """Shared machinery of :class:`Inspect` and :class:`Control`."""

    kind: ClassVar[str]
    attribute: ClassVar[str]

    def __init__(self, celery_app: celery.Celery) -> None:
        self.celery_app = celery_app

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.celery_app.main!r}>"

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *commands(self.kind)})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in commands(self.kind):
            raise AttributeError(
                f"celery.{self.attribute} has no command {name!r}; "
                f"valid commands: {', '.join(commands(self.kind))}"
            )

        def command(
            *args: Any,
            destination: Destination = None,
            timeout: float | None = None,
            **kwargs: Any,
        ) -> dict[str, Any]:
            return self._call(name, args, kwargs, destination, timeout)

        command.__name__ = command.__qualname__ = name
        command.__doc__ = f"Send the {name!r} {self.kind} command; see Celery's documentation."
        return command

    def _call(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        destination: Destination,
        timeout: float | None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _options(self, destination: Destination, timeout: float | None) -> dict[str, Any]:
        nodes = _destination(destination)
        return {
            "destination": nodes,
            "timeout": DEFAULT_TIMEOUT if timeout is None else timeout,
            # With known recipients, stop waiting as soon as all of them answered.
            "limit": len(nodes) if nodes else None,
        }

    def _broadcast(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> dict[str, Any]:
        # A command Celery's client classes have no method for (e.g. one a project
        # registered with `control_command`): name the positional arguments from the
        # command's own registration, as `celery inspect|control` does.
        from celery.worker.control import Panel

        meta = Panel.meta[name]
        names = [arg for arg, _ in (meta.args or ())]
        if len(args) > len(names) and not meta.variadic:
            raise TypeError(f"{self.attribute}.{name}() takes at most {len(names)} arguments")
        arguments = dict(zip(names, args, strict=False))
        if meta.variadic:
            arguments[meta.variadic] = list(args[len(names) :])
        arguments.update(kwargs)
        replies = self.celery_app.control.broadcast(
            name, arguments=arguments, reply=True, **options
        )
        return _flatten(replies)


class Inspect(_Remote):
    """``celery.inspect``: ask workers about their state.

    Every method accepts ``destination`` (a worker name, a comma-separated string of
    names, or a list of them; default: every worker) and ``timeout`` (seconds to wait for
    replies, default 1), and returns ``{worker name: reply}``, ``{}`` when no worker
    answered. Any other command of Celery's ``inspect`` API is available by name
    (``celery.inspect.clock()``); :func:`commands` lists them.
    """

    kind = "inspect"
    attribute = "inspect"

    def ping(
        self, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Ping workers: ``{"foo@host": {"ok": "pong"}}``."""
        return self._call("ping", (), {}, destination, timeout)

    def active(
        self, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Tasks being executed: ``{worker: [task info, ...]}``."""
        return self._call("active", (), {}, destination, timeout)

    def scheduled(
        self, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Tasks with an ETA or countdown, waiting for their time."""
        return self._call("scheduled", (), {}, destination, timeout)

    def reserved(
        self, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Tasks received and prefetched, not yet running."""
        return self._call("reserved", (), {}, destination, timeout)

    def revoked(
        self, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Ids of revoked tasks each worker remembers."""
        return self._call("revoked", (), {}, destination, timeout)

    def registered(
        self, *taskinfoitems: str, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Registered task names, with the given task attributes (e.g. ``"rate_limit"``)."""
        return self._call("registered", taskinfoitems, {}, destination, timeout)

    def stats(
        self, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Worker statistics: pool (``stats()[w]["pool"]["max-concurrency"]``), totals ..."""
        return self._call("stats", (), {}, destination, timeout)

    def active_queues(
        self, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Queues each worker consumes from."""
        return self._call("active_queues", (), {}, destination, timeout)

    def query_task(
        self, *ids: str, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """State of the given task ids on each worker: ``{worker: {id: [state, info]}}``."""
        return self._call("query_task", ids, {}, destination, timeout)

    def conf(
        self,
        with_defaults: bool = False,
        *,
        destination: Destination = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Each worker's Celery configuration."""
        return self._call("conf", (with_defaults,), {}, destination, timeout)

    def _call(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        destination: Destination,
        timeout: float | None,
    ) -> dict[str, Any]:
        options = self._options(destination, timeout)
        client = self.celery_app.control.inspect(**options)
        method = getattr(type(client), name, None)
        if method is None:
            return self._broadcast(name, args, kwargs, options)
        reply = getattr(client, name)(*args, **kwargs)
        return dict(reply or {})


class Control(_Remote):
    """``celery.control``: tell workers to change what they do.

    Every method accepts ``destination`` and ``timeout`` like :class:`Inspect`, waits for
    the workers' replies and returns ``{worker name: reply}``, ``{}`` when nobody
    answered. Any other command of Celery's ``control`` API is available by name
    (``celery.control.rate_limit("tasks.add", "10/m")``); :func:`commands` lists them.
    """

    kind = "control"
    attribute = "control"

    def shutdown(
        self, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Ask workers to shut down warmly (finish running tasks, then exit).

        A worker exits without replying to ``shutdown``, so the workers are pinged first
        and only those that answered are told to stop: the result names them,
        ``{worker: {"ok": "shutdown requested"}}``. Always pass ``destination`` unless
        every worker on the broker really should stop.
        """
        alive = Inspect(self.celery_app).ping(destination=destination, timeout=timeout)
        if alive:
            self.celery_app.control.shutdown(destination=list(alive), reply=False)
        return {name: dict(SHUTDOWN_REPLY) for name in alive}

    def pool_restart(
        self,
        modules: list[str] | None = None,
        reload: bool = False,
        *,
        destination: Destination = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Restart the pool's child processes (needs ``worker_pool_restarts``)."""
        return self._call(
            "pool_restart", (), {"modules": modules, "reload": reload}, destination, timeout
        )

    def pool_grow(
        self, n: int = 1, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Add ``n`` processes to each worker's pool."""
        return self._call("pool_grow", (n,), {}, destination, timeout)

    def pool_shrink(
        self, n: int = 1, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Remove ``n`` processes from each worker's pool."""
        return self._call("pool_shrink", (n,), {}, destination, timeout)

    def autoscale(
        self,
        max: int,
        min: int,
        *,
        destination: Destination = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Set the autoscaler's bounds (workers started with ``--autoscale``)."""
        return self._call("autoscale", (max, min), {}, destination, timeout)

    def heartbeat(
        self, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Make workers send a ``worker-heartbeat`` event now."""
        return self._call("heartbeat", (), {}, destination, timeout)

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | int | None,
        *,
        destination: Destination = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Set a task's rate limit (``"10/m"``; ``None`` or ``0`` removes it)."""
        return self._call("rate_limit", (task_name, rate_limit), {}, destination, timeout)

    def revoke(
        self,
        task_id: str | list[str],
        terminate: bool = False,
        signal: str = "SIGTERM",
        *,
        destination: Destination = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Revoke task ids; with ``terminate``, kill the process running them."""
        return self._call(
            "revoke", (task_id,), {"terminate": terminate, "signal": signal}, destination, timeout
        )

    def add_consumer(
        self, queue: str, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Make workers consume from ``queue`` too."""
        return self._call("add_consumer", (queue,), {}, destination, timeout)

    def cancel_consumer(
        self, queue: str, *, destination: Destination = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Make workers stop consuming from ``queue``."""
        return self._call("cancel_consumer", (queue,), {}, destination, timeout)

    def _call(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        destination: Destination,
        timeout: float | None,
    ) -> dict[str, Any]:
        options = self._options(destination, timeout)
        control = self.celery_app.control
        method = getattr(type(control), name, None)
        # Celery's own client methods know each command's arguments; `election` is the
        # one that cannot wait for replies, so it goes through the generic path.
        if method is None or name == "election":
            return self._broadcast(name, args, kwargs, options)
        replies = getattr(control, name)(*args, reply=True, **kwargs, **options)
        return _flatten(replies)


def _flatten(replies: list[dict[str, Any]] | None) -> dict[str, Any]:
    from celery.app.control import flatten_reply

    return dict(flatten_reply(replies)) if replies else {}


class InspectMixin:
    """Extension properties ``inspect`` and ``control``."""

    if TYPE_CHECKING:

        @property
        def celery_app(self) -> celery.Celery: ...

    @property
    def inspect(self) -> Inspect:
        """Celery's inspect API for the current app's workers (:class:`Inspect`)."""
        return Inspect(self.celery_app)

    @property
    def control(self) -> Control:
        """Celery's control API for the current app's workers (:class:`Control`)."""
        return Control(self.celery_app)
