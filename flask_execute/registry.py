"""Registered tasks: ``@celery.task`` (``celery.schedule`` builds on it, see
:mod:`flask_execute.schedules`).

A decorated function is kept as a declaration on the extension and registered on the
Celery application of every Flask app the extension serves: when the app is registered
(the default ``tasks`` and ``scheduling`` plugins bind it at ``init_app``), or at once
for apps registered already. So ``add.delay(1, 2)`` works in the direct and the factory
pattern alike, and returns the same :class:`~flask_execute.Future` as ``submit``.
"""

from __future__ import annotations

import functools
import importlib
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, overload

from flask_execute.errors import ConfigurationError

if TYPE_CHECKING:
    import celery
    from flask import Flask

    from flask_execute.futures import Future
    from flask_execute.runtime import AppState

#: Options of Celery's ``app.task`` that the registry decides itself.
_RESERVED_OPTIONS = ("shared", "lazy")


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
