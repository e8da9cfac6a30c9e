"""Registered and scheduled tasks: ``@celery.task`` and ``@celery.schedule``.

A decorated function is kept as a declaration on the extension and registered on the
Celery application of every Flask app the extension serves: when the app is registered
(the default ``tasks`` and ``scheduling`` plugins bind it at ``init_app``), or at once
for apps registered already. So ``add.delay(1, 2)`` works in the direct and the factory
pattern alike, and returns the same :class:`~flask_execute.Future` as ``submit``.
"""

from __future__ import annotations

import functools
import importlib
import numbers
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, overload

from celery import schedules

from flask_execute.errors import ConfigurationError

if TYPE_CHECKING:
    import celery
    from flask import Flask

    from flask_execute.futures import Future
    from flask_execute.runtime import AppState

#: Options of Celery's ``app.task`` that the registry decides itself.
_RESERVED_OPTIONS = ("shared", "lazy")

#: Keywords ``@celery.schedule`` passes to :class:`celery.schedules.crontab`.
CRONTAB_KEYWORDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


class _Extension(Protocol):
    def state(self, app: Flask | None = None) -> AppState: ...


# -- registered tasks ------------------------------------------------------------------


class RegisteredTask:
    """A function decorated with ``@celery.task``.

    Calling it calls the function, in this process. ``delay``/``apply_async`` send it
    to a worker and return a :class:`~flask_execute.Future`; any other attribute
    (``name``, ``s``, ``request`` ...) is the Celery task of the current application
    (the only one, or the one whose context is active).

    :param registry: the extension's task registry.
    :param fn: the decorated function.
    :param options: Celery task options (``name``, ``bind``, ``max_retries`` ...).
    """

    __wrapped__: Callable[..., Any]

    def __init__(
        self, registry: TaskRegistry, fn: Callable[..., Any], options: Mapping[str, Any]
    ) -> None:
        functools.update_wrapper(self, fn)
        self._registry = registry
        self.options: dict[str, Any] = dict(options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.options.get("bind"):
            # A bound function takes the task as its first argument, as Celery calls it.
            return self.task()(*args, **kwargs)
        return self.__wrapped__(*args, **kwargs)

    def task_name(self, celery_app: celery.Celery) -> str:
        """The task's name on ``celery_app``: ``name=`` or Celery's generated name."""
        name = self.options.get("name")
        if name:
            return str(name)
        fn = self.__wrapped__
        return str(celery_app.gen_task_name(fn.__name__, fn.__module__))

    def task(self, app: Flask | None = None) -> celery.Task:
        """The Celery task on ``app``, the current app, or the only registered app."""
        return self.task_for(self._registry.extension.state(app))

    def task_for(self, state: AppState) -> celery.Task:
        """The Celery task on the application of ``state``."""
        name = self.task_name(state.celery_app)
        try:
            task: celery.Task = state.celery_app.tasks[name]
        except KeyError:
            raise RuntimeError(
                f"task {name!r} is not registered on {state.app.name!r}: the 'tasks' "
                "plugin is disabled (remove it from CELERY_DISABLED_PLUGINS)"
            ) from None
        return task

    def delay(self, *args: Any, **kwargs: Any) -> Future:
        """Send ``fn(*args, **kwargs)`` to a worker; return its Future."""
        future: Future = self.task().delay(*args, **kwargs)
        return future

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Future:
        """Send the task with Celery publishing options; return its Future."""
        future: Future = self.task().apply_async(args, kwargs, **options)
        return future

    def __getattr__(self, name: str) -> Any:
        # Private names stay private: introspection (pytest, Sphinx, mock) probes them
        # and expects AttributeError, not a lookup of the current application.
        if name.startswith("_") or name == "options":
            raise AttributeError(name)
        return getattr(self.task(), name)

    def __repr__(self) -> str:
        return f"<registered task {self.__module__}.{self.__qualname__}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # Submitted to a worker (celery.submit(add, ...)): travel by reference, like the
        # module-level function the name stands for, never with the extension inside.
        # A script's __main__ is not importable there: send the plain function instead.
        if self.__module__ == "__main__":
            return _plain, (self.__wrapped__,)
        return _import_attribute, (self.__module__, self.__qualname__)


def _plain(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def _import_attribute(module: str, qualname: str) -> Any:
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class TaskRegistry:
    """``celery.task``: the decorator, and the registered tasks by name.

    ``@celery.task`` or ``@celery.task(name="test", bind=True, ...)`` registers a
    function; ``celery.task.add`` finds it by function name, ``celery.task["test"]``
    by task name (given, generated, or the function's name).
    """

    def __init__(self, extension: _Extension) -> None:
        self.extension = extension
        self._tasks: list[RegisteredTask] = []
        self._states: weakref.WeakSet[AppState] = weakref.WeakSet()

    @overload
    def __call__(self, fn: Callable[..., Any], /, **options: Any) -> RegisteredTask: ...

    @overload
    def __call__(
        self, fn: None = None, /, **options: Any
    ) -> Callable[[Callable[..., Any]], RegisteredTask]: ...

    def __call__(
        self, fn: Callable[..., Any] | None = None, /, **options: Any
    ) -> RegisteredTask | Callable[[Callable[..., Any]], RegisteredTask]:
        _check_task_options(options)
        if fn is None:
            return functools.partial(self.register, options=options)
        return self.register(fn, options)

    def register(self, fn: Callable[..., Any], options: Mapping[str, Any]) -> RegisteredTask:
        """Declare ``fn`` as a task and register it on every bound application."""
        if isinstance(fn, RegisteredTask):
            if options:
                raise ConfigurationError(
                    f"{fn!r} is registered already: give its options to the first @celery.task(...)"
                )
            return fn
        if not callable(fn):
            raise TypeError(f"@celery.task decorates a function, not {fn!r}")
        task = RegisteredTask(self, fn, options)
        self._tasks.append(task)
        for state in list(self._states):
            _register_on(state, task)
        return task

    def bind(self, state: AppState) -> None:
        """Register every declared task on ``state``'s app, and later ones as declared."""
        self._states.add(state)
        for task in self._tasks:
            _register_on(state, task)

    def __getattr__(self, name: str) -> RegisteredTask:
        if name.startswith("_"):
            raise AttributeError(name)
        for task in reversed(self._tasks):
            if task.__name__ == name:
                return task
        raise AttributeError(
            f"no function named {name!r} is registered with @celery.task "
            f"(registered: {', '.join(t.__name__ for t in self._tasks) or 'none'})"
        )

    def __getitem__(self, name: str) -> RegisteredTask:
        for task in reversed(self._tasks):
            if name in (task.options.get("name"), task.__name__) or any(
                name == task.task_name(state.celery_app) for state in list(self._states)
            ):
                return task
        raise KeyError(f"no task named {name!r} is registered with @celery.task")

    def __contains__(self, name: object) -> bool:
        if isinstance(name, RegisteredTask):
            return name in self._tasks
        try:
            self[str(name)]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[RegisteredTask]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"<TaskRegistry of {len(self._tasks)} tasks>"


def _check_task_options(options: Mapping[str, Any]) -> None:
    for key in _RESERVED_OPTIONS:
        if key in options:
            raise ConfigurationError(
                f"@celery.task does not take {key}=: the task is registered on every "
                "application the extension serves, when the application is registered"
            )
    name = options.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigurationError(f"@celery.task(name=...) must be a non-empty string, not {name!r}")


def _register_on(state: AppState, task: RegisteredTask) -> None:
    # The task class is the app's (TaskMixin over base_task): app context included.
    state.celery_app.task(task.__wrapped__, shared=False, lazy=False, **task.options)


# -- scheduled tasks -------------------------------------------------------------------


def check_schedule(schedule: Any, crontab_kwargs: Mapping[str, Any]) -> None:
    """Reject what no plugin could turn into a schedule; called at decoration time.

    :raises ConfigurationError: both or neither given, crontab keywords Celery rejects,
        or an interval that is not positive.
    """
    if schedule is not None and crontab_kwargs:
        raise ConfigurationError(
            f"@celery.schedule got a schedule ({schedule!r}) and crontab keywords "
            f"({', '.join(sorted(crontab_kwargs))}): give one, e.g. "
            "@celery.schedule(crontab(hour=0, minute=0)) or @celery.schedule(hour=0, minute=0)"
        )
    if crontab_kwargs:
        unknown = sorted(set(crontab_kwargs) - set(CRONTAB_KEYWORDS))
        if unknown:
            raise ConfigurationError(
                f"@celery.schedule got unknown keyword(s) {', '.join(unknown)}: crontab "
                f"keywords are {', '.join(CRONTAB_KEYWORDS)}"
            )
        try:
            schedules.crontab(**crontab_kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"@celery.schedule: invalid crontab keywords: {exc}") from exc
        return
    if schedule is None:
        raise ConfigurationError(
            "@celery.schedule needs to know when to run: a number of seconds, a timedelta, "
            "a schedule object (crontab(...), solar(...)) or crontab keywords (hour=0, minute=0)"
        )
    if isinstance(schedule, bool):
        raise ConfigurationError(
            f"@celery.schedule cannot run on {schedule!r}: give a number of seconds"
        )
    interval = schedule
    if isinstance(schedule, numbers.Real):
        interval = timedelta(seconds=float(schedule))
    if isinstance(interval, timedelta) and interval <= timedelta(0):
        raise ConfigurationError(f"@celery.schedule needs a positive interval, not {schedule}")


def make_schedule(schedule: Any, crontab_kwargs: Mapping[str, Any]) -> Any:
    """Turn the arguments of ``@celery.schedule(...)`` into a Celery schedule object.

    The default answer of :func:`~flask_execute.hookspecs.flask_execute_make_schedule`.

    :param schedule: seconds, a :class:`~datetime.timedelta`, a schedule object
        (``crontab(...)``, ``solar(...)``), or ``None``.
    :param crontab_kwargs: :class:`~celery.schedules.crontab` keywords.
    :raises ConfigurationError: both or neither given, or a value Celery rejects.
    """
    check_schedule(schedule, crontab_kwargs)
    if crontab_kwargs:
        return schedules.crontab(**crontab_kwargs)
    if isinstance(schedule, numbers.Real):
        return schedules.schedule(timedelta(seconds=float(schedule)))
    if isinstance(schedule, timedelta):
        return schedules.schedule(schedule)
    if isinstance(schedule, schedules.BaseSchedule) or callable(getattr(schedule, "is_due", None)):
        return schedule
    raise ConfigurationError(
        f"@celery.schedule cannot run on {schedule!r}: give a number of seconds, a "
        "timedelta, or a schedule object such as crontab(...) or solar(...)"
    )


@dataclass
class Scheduled:
    """One ``@celery.schedule`` declaration, before it is turned into a beat entry."""

    name: str
    task: RegisteredTask
    schedule: Any
    crontab_kwargs: dict[str, Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


class ScheduleRegistry:
    """``celery.schedule``: the decorator, and the scheduled tasks by name.

    ``@celery.schedule(30)``, ``@celery.schedule(timedelta(hours=1))``,
    ``@celery.schedule(hour=0, minute=0)`` or ``@celery.schedule(solar(...))``, with
    ``args``, ``kwargs``, ``name`` (the beat entry's) and ``options`` (publishing
    options), registers the function as a task and adds a beat entry for it.
    ``celery.schedule.fn_name`` and ``celery.schedule["entry name"]`` return the task.
    """

    def __init__(self, tasks: TaskRegistry) -> None:
        self.tasks = tasks
        self._entries: dict[str, Scheduled] = {}
        # the application's own beat_schedule (CELERYBEAT_SCHEDULE) at bind time
        self._config: weakref.WeakKeyDictionary[AppState, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(
        self,
        schedule: Any = None,
        /,
        *,
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        **crontab_kwargs: Any,
    ) -> Callable[[Callable[..., Any]], RegisteredTask]:
        if isinstance(schedule, RegisteredTask) or (
            callable(schedule) and not hasattr(schedule, "is_due")
        ):
            raise ConfigurationError(
                "@celery.schedule needs to know when to run: write @celery.schedule(30) or "
                "@celery.schedule(hour=0, minute=0), not a bare @celery.schedule"
            )
        # What no plugin could accept fails here; the rest when an application turns it
        # into a schedule (at once if one is registered, else at init_app).
        check_schedule(schedule, crontab_kwargs)
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"@celery.schedule(name=...) must be a string, not {name!r}")
        if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
            raise ConfigurationError(
                f"@celery.schedule(args=...) must be a list or tuple, not {args!r}"
            )
        for label, value in (("kwargs", kwargs), ("options", options)):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigurationError(
                    f"@celery.schedule({label}=...) must be a dict, not {value!r}"
                )

        def decorate(fn: Callable[..., Any]) -> RegisteredTask:
            task = self.tasks.register(fn, {})
            entry = Scheduled(
                name or f"{task.__module__}.{task.__qualname__}",
                task,
                schedule,
                dict(crontab_kwargs),
                tuple(args),
                dict(kwargs or {}),
                dict(options or {}),
            )
            if entry.name in self._entries:
                raise ConfigurationError(
                    f"two @celery.schedule entries are named {entry.name!r}: give each a "
                    "different name="
                )
            self._entries[entry.name] = entry
            try:
                for state in list(self._config):
                    self.refresh(state)
            except BaseException:
                del self._entries[entry.name]  # a plugin rejected it: leave nothing behind
                raise
            return task

        return decorate

    def bind(self, state: AppState) -> None:
        """Publish the entries in ``state``'s ``beat_schedule``, now and on every change."""
        if state not in self._config:
            self._config[state] = dict(state.celery_app.conf.beat_schedule or {})
        self.refresh(state)

    def entries(self, state: AppState) -> dict[str, dict[str, Any]]:
        """The beat entries of the declared schedules, for ``state``'s application."""
        return {
            entry.name: {
                "task": entry.task.task_name(state.celery_app),
                "schedule": state.pm.make_schedule(state.app, entry.schedule, entry.crontab_kwargs),
                "args": entry.args,
                "kwargs": entry.kwargs,
                "options": entry.options,
            }
            for entry in self._entries.values()
        }

    def refresh(self, state: AppState) -> None:
        """Set ``beat_schedule``: the config's entries, then every plugin's."""
        merged = dict(self._config.get(state, {}))
        merged.update(state.pm.beat_schedule(state))
        state.celery_app.conf.beat_schedule = merged

    def __getattr__(self, name: str) -> RegisteredTask:
        if name.startswith("_"):
            raise AttributeError(name)
        for entry in reversed(self._entries.values()):
            if entry.task.__name__ == name:
                return entry.task
        raise AttributeError(f"no function named {name!r} is scheduled with @celery.schedule")

    def __getitem__(self, name: str) -> RegisteredTask:
        entry = self._entries.get(name)
        if entry is None:
            raise KeyError(f"no @celery.schedule entry is named {name!r}")
        return entry.task

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


class TasksMixin:
    """Extension attributes ``task`` and ``schedule`` (see :class:`TaskRegistry` and
    :class:`ScheduleRegistry`)."""

    @functools.cached_property
    def task(self) -> TaskRegistry:
        """Register tasks: ``@celery.task``; find them: ``celery.task.add``."""
        return TaskRegistry(self)  # type: ignore[arg-type]

    @functools.cached_property
    def schedule(self) -> ScheduleRegistry:
        """Schedule tasks: ``@celery.schedule(hour=0, minute=0)``."""
        return ScheduleRegistry(self.task)
