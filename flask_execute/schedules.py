"""``@celery.schedule``: scheduled tasks as entries of beat's schedule.

A schedule declared on the extension registers its function as a task (see
:mod:`flask_execute.registry`) and becomes a ``beat_schedule`` entry of every Flask app
the extension serves, through the
:func:`~flask_execute.hookspecs.flask_execute_make_schedule` and
:func:`~flask_execute.hookspecs.flask_execute_add_beat_entries` hooks.
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import schedules

from flask_execute.errors import ConfigurationError

if TYPE_CHECKING:
    from flask_execute.registry import RegisteredTask, TaskRegistry
    from flask_execute.runtime import AppState

#: Keywords ``@celery.schedule`` passes to :class:`celery.schedules.crontab`.
CRONTAB_KEYWORDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")


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
        # A function (or a registered task) where a schedule belongs: a bare decorator.
        # The class is asked: a registered task forwards instance attributes to its app.
        if callable(schedule) and not hasattr(type(schedule), "is_due"):
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
        merged.update(state.pm.add_beat_entries(state.app))
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
