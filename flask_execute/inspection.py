"""``celery.inspect`` and ``celery.control``: Celery's remote control API, in-process.

A command is the method of that name on Celery's own clients,
:class:`celery.app.control.Inspect` and :class:`celery.app.control.Control`, called with
the same arguments. What this module adds: ``destination`` and ``timeout`` on every call,
``{worker name: reply}`` as the result (``{}`` when no worker answered in time), commands
a project registered reached by name, and a ``shutdown`` that says whom it stopped.
Nothing here spawns a process or parses CLI output.

::

    celery.inspect.ping()                                   # {'foo@host': {'ok': 'pong'}}
    celery.inspect.stats(destination=["foo@host"], timeout=2)
    celery.control.pool_grow(1, destination="foo@host")     # {'foo@host': {'ok': ...}}
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from flask_execute.errors import BrokerUnavailable

if TYPE_CHECKING:
    import celery

#: How long to wait for replies when no ``timeout`` is given (Celery's own default).
DEFAULT_TIMEOUT = 1.0

#: What :meth:`Control.shutdown` reports for each worker it asked to stop.
SHUTDOWN_REPLY = {"ok": "shutdown requested"}

#: Seconds :func:`online_workers` listens, at least, for workers it does not expect.
LISTEN = 0.2

Destination = str | Iterable[str] | None


@contextlib.contextmanager
def own_connection(celery_app: celery.Celery) -> Iterator[Any]:
    """A broker connection of its own, for remote control that ends on a timeout.

    A reply collection that times out leaves the broker's blocking read running (on
    Redis a ``BRPOP`` of up to a second), and the next call on that connection waits
    for it, missing the replies it wanted. This connection is closed in the background,
    after that read, and never returns to Celery's pool.
    """
    connection = celery_app.connection_for_read()
    try:
        yield connection
    finally:
        threading.Thread(
            target=connection.release, name="flask_execute-control", daemon=True
        ).start()


def reach_broker(celery_app: celery.Celery, connection: Any, timeout: float) -> None:
    """Connect ``connection`` with one quick retry, within ``timeout`` seconds; a broker
    that does not answer raises :exc:`~flask_execute.BrokerUnavailable` naming its URL,
    ``CELERY_BROKER_URL`` and how long the attempt really took (Celery's own retries
    would take seconds and end in a raw kombu error)."""
    start = time.monotonic()
    try:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0.2, timeout=timeout
        )
    except (OperationalError, OSError) as exc:
        took = time.monotonic() - start
        url = maybe_sanitize_url(str(celery_app.conf.broker_url))
        raise BrokerUnavailable(
            f"the broker at {url} did not answer ({exc}; gave up after {took:.2f}s): "
            "start it, or set CELERY_BROKER_URL to one that runs"
        ) from None


def broker_reachable(celery_app: celery.Celery, timeout: float) -> None:
    """:func:`reach_broker` on a connection of its own, released at once."""
    with own_connection(celery_app) as connection:
        reach_broker(celery_app, connection, timeout)


class _AllAnswered(Exception):
    pass


def online_workers(
    celery_app: celery.Celery, expected: Collection[str], timeout: float
) -> set[str]:
    """The names of the workers that answer a ping within ``timeout`` seconds.

    Celery's ping waits ``timeout`` for each next answer. Waiting that long after the
    last answer is what makes ``celery status`` slow, so when the workers ``expected``
    all answered early, a second ping listens only as long as the first took (at
    least :data:`LISTEN` seconds) after each answer, for workers nobody expected.
    Workers answer a broadcast within milliseconds of each other.
    """
    wanted = set(expected)
    found: set[str] = set()

    def on_reply(reply: dict[str, object]) -> None:
        found.update(reply)
        if wanted <= found:
            raise _AllAnswered  # ends Celery's reply collection early

    control = celery_app.control
    with own_connection(celery_app) as connection:
        reach_broker(celery_app, connection, timeout)
        start = time.monotonic()
        with contextlib.suppress(_AllAnswered):
            replies = control.ping(
                connection=connection, timeout=timeout, callback=on_reply if wanted else None
            )
            # Waited the whole timeout: everyone who answered is here.
            return found.union(name for reply in replies or () for name in reply)
        took = time.monotonic() - start
        listen = min(max(LISTEN, took), timeout - took)
        if listen > 0:
            replies = control.ping(connection=connection, timeout=listen) or ()
            found.update(name for reply in replies for name in reply)
    return found


def commands(kind: str) -> list[str]:
    """Return the remote commands of ``kind`` (``"inspect"`` or ``"control"``).

    The list is Celery's own registry of worker commands (``Panel.meta``), so commands
    registered with ``celery.worker.control.inspect_command`` / ``control_command`` in
    this process are included.
    """
    # Imported here: the worker's command registry is only needed once remote control is.
    from celery.worker.control import Panel

    return sorted(name for name, meta in Panel.meta.items() if meta.type == kind and meta.visible)


class _Remote:
    """A method per remote command of :attr:`kind`, built on first access by name."""

    kind: ClassVar[str]

    def __init__(self, celery_app: celery.Celery) -> None:
        self.celery_app = celery_app

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.celery_app.main!r}>"

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *commands(self.kind)})

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        # Celery's clients are configured per call (destination, timeout), so the
        # commands cannot simply be their bound methods: each call builds its options.
        if name.startswith("_") or name not in commands(self.kind):
            raise AttributeError(
                f"celery.{self.kind} has no command {name!r}; "
                f"valid commands: {', '.join(commands(self.kind))}"
            )

        def command(
            *args: Any, destination: Destination = None, timeout: float | None = None, **kwargs: Any
        ) -> dict[str, Any]:
            if isinstance(destination, str):  # "a@host, b@host", as `-d` takes it
                destination = [node.strip() for node in destination.split(",") if node.strip()]
            nodes = None if destination is None else list(destination)
            wait = DEFAULT_TIMEOUT if timeout is None else timeout
            options = {
                "destination": nodes,
                "timeout": wait,
                # With known recipients, stop waiting as soon as all of them answered.
                "limit": len(nodes) if nodes else None,
            }
            broker_reachable(self.celery_app, wait)
            return self._send(name, args, kwargs, options)

        command.__name__ = command.__qualname__ = name
        command.__doc__ = f"Celery's {name!r} {self.kind} command (celery.app.control)."
        return command

    def _send(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _by_name(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> dict[str, Any]:
        """Send a command Celery's clients have no method for (one a project registered)."""
        from celery.worker.control import Panel

        # Celery names positional arguments after the command's registration only in its
        # CLI (celery.bin.control, which also converts them from strings): do the naming.
        meta = Panel.meta[name]
        names = [arg for arg, _ in meta.args or ()]
        if len(args) > len(names) and not meta.variadic:
            raise TypeError(f"{self.kind}.{name}() takes at most {len(names)} arguments")
        arguments = dict(zip(names, args, strict=False))
        if meta.variadic:
            arguments[meta.variadic] = list(args[len(names) :])
        # Inspect._request is Celery's generic send-wait-merge, for either kind of command.
        reply = self.celery_app.control.inspect(**options)._request(name, **arguments, **kwargs)
        return dict(reply or {})


class Inspect(_Remote):
    """``celery.inspect``: ask workers about their state.

    ``celery.inspect.<command>(*args, destination=None, timeout=None, **kwargs)`` calls the
    method of Celery's :class:`celery.app.control.Inspect` (``ping``, ``active``,
    ``scheduled``, ``reserved``, ``revoked``, ``registered``, ``stats``,
    ``active_queues``, ``query_task``, ``conf``, ``clock`` ...) with ``args`` and
    ``kwargs``. ``destination`` is a worker name, a comma-separated string of names, or a
    list of them (default: every worker); ``timeout`` is how long to wait for replies
    (default 1 second). Returns ``{worker name: reply}``, ``{}`` when no worker answered.
    """

    kind = "inspect"

    def _send(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> dict[str, Any]:
        inspect = self.celery_app.control.inspect(**options)
        if not callable(getattr(type(inspect), name, None)):
            return self._by_name(name, args, kwargs, options)
        return dict(getattr(inspect, name)(*args, **kwargs) or {})


class Control(_Remote):
    """``celery.control``: tell workers to change what they do.

    ``celery.control.<command>(*args, destination=None, timeout=None, **kwargs)`` calls the
    method of Celery's :class:`celery.app.control.Control` (``pool_restart``,
    ``pool_grow``, ``pool_shrink``, ``autoscale``, ``rate_limit``, ``time_limit``,
    ``revoke``, ``add_consumer``, ``cancel_consumer``, ``heartbeat`` ...) with ``args`` and
    ``kwargs``, waits for the workers' replies and returns ``{worker name: reply}``, ``{}``
    when nobody answered; ``destination`` and ``timeout`` are as for :class:`Inspect`.
    """

    kind = "control"

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

    def _send(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> dict[str, Any]:
        from celery.app.control import flatten_reply

        control = self.celery_app.control
        # `election` is the one Celery method that cannot wait for replies.
        if not callable(getattr(type(control), name, None)) or name == "election":
            return self._by_name(name, args, kwargs, options)
        return dict(
            flatten_reply(getattr(control, name)(*args, reply=True, **kwargs, **options) or [])
        )
