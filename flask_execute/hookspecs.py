"""Hook specifications: the contract between the core and every plugin.

Every behaviour of flask_execute past the bare core is a plugin answering these hooks.
The defaults live in ``flask_execute.plugins`` and are registered on every plugin
manager; a third-party plugin is a module or object with functions decorated by
:data:`flask_execute.hookimpl`, found through the ``flask_execute`` entry-point group
or given as ``Celery(app, plugins=[...])``.

How to change a default:

* **replace** it: answer a ``firstresult`` hook; the defaults are ``trylast``, so any
  other answer wins;
* **extend** it: implement the hook with ``@hookimpl(wrapper=True)`` and ``yield`` to
  get the default's result;
* **remove** it: list its name in ``CELERY_DISABLED_PLUGINS``.

**One convention for context.** Every hook about an application receives that Flask
``app`` as its first argument (only :func:`flask_execute_add_config_keys` has none);
what else a hook needs comes as further keyword arguments (the task, the service, the
messages). The application's record, with its Celery app, plugin manager and pending
futures, is ``AppState.of(app)`` (:class:`~flask_execute.runtime.AppState`). A plugin
may accept any subset of a hook's arguments.

**Answers the core needs.** The first-result hooks in
:data:`~flask_execute.manager.REQUIRED_HOOKS` must be answered: ``init_app`` fails with
a :exc:`~flask_execute.ConfigurationError` naming the hook when no plugin implements
one (its default was blocked), and a call that every implementation answers with
``None`` fails the same way. The other first-result hooks switch a feature off when
unanswered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flask_execute.markers import hookspec

if TYPE_CHECKING:
    import celery
    from flask import Blueprint, Flask

    from flask_execute.futures import Future
    from flask_execute.listener import ResultSource
    from flask_execute.pool import FuturePool
    from flask_execute.runtime import Message
    from flask_execute.serializers import Serializer
    from flask_execute.services import Service, ServiceProcess, Supervisor


# -- configuration ---------------------------------------------------------------------


@hookspec
def flask_execute_add_config_keys() -> Mapping[str, Any]:
    """Declare the extension's own ``CELERY_*`` configuration keys and their defaults.

    Keys declared here are set on ``app.config`` with ``setdefault`` at ``init_app``,
    validated by :func:`flask_execute_validate_config`, and never forwarded to Celery.

    :return: a mapping of key to default value.

    Called once per plugin manager; every plugin's answer is merged.
    """


@hookspec
def flask_execute_validate_config(app: Flask, config: Mapping[str, Any]) -> None:
    """Check the extension's own keys; raise :exc:`~flask_execute.ConfigurationError`.

    :param app: the Flask application being registered.
    :param config: ``app.config`` after defaults were applied.

    Called at ``init_app``, before anything is started; the error message must name the
    key and say how to fix it.
    """


@hookspec
def flask_execute_configure_celery(app: Flask, settings: dict[str, Any]) -> None:
    """Contribute defaults and overrides to the Celery configuration.

    :param app: the Flask application being registered.
    :param settings: Celery settings in their new lower-case spelling, already holding
        every ``CELERY_*`` key of the Flask config. Use ``settings.setdefault`` for a
        default the user can override, plain assignment for an override.

    Called at ``init_app``, before the Celery application is configured.
    """


@hookspec
def flask_execute_init_app(app: Flask) -> None:
    """Set up per-application behaviour once the Celery application exists.

    :param app: the Flask application being registered; ``AppState.of(app)`` is its
        record (Celery app, plugin manager, futures).

    Called last in ``init_app``; register tasks, signals or teardown handlers here.
    """


# -- serialization ---------------------------------------------------------------------


@hookspec(firstresult=True)
def flask_execute_make_serializer(app: Flask) -> Serializer:
    """Return the serializer that turns functions, arguments and results into bytes.

    :param app: the Flask application being registered.
    :return: an object with ``name``, ``dumps(obj) -> bytes`` and
        ``loads(data) -> obj`` (see :class:`~flask_execute.serializers.Serializer`).

    First result wins; required. The default is cloudpickle. Whatever it returns, the core signs
    its output with HMAC and verifies the signature before ``loads`` is ever called.
    """


# -- task execution --------------------------------------------------------------------


@hookspec(firstresult=True)
def flask_execute_send(app: Flask, messages: Sequence[Message]) -> list[Future]:
    """Deliver task messages for execution and return one Future per message.

    :param app: the Flask application sending them.
    :param messages: the calls to send, in order; ``submit`` sends one, ``map`` many.
    :return: the futures, in the order of ``messages``. A message that brings its own
        Future (``message.future``: a chunk of ``map``) must be tracked and answered
        with exactly that one: get each message's Future with
        ``message.make_future(app, pm)``.

    First result wins; required. The default publishes through Celery's broker; the
    ``eager`` plugin answers first when ``task_always_eager`` is on and runs them
    in-process. The default refuses to publish while eager mode is on, so blocking
    ``eager`` with eager mode on fails at ``init_app``.
    """


@hookspec(firstresult=True)
def flask_execute_send_after(app: Flask, messages: Sequence[Message]) -> list[Future]:
    """Send messages once the tasks they wait for are done; return one Future per
    message.

    :param app: the Flask application sending them.
    :param messages: calls with Futures among their arguments: ``message.after`` lists
        the task ids whose outcome each waits for (a call of a ``map`` waits for its
        chunk). Their arguments hold :class:`~flask_execute.refs.Ref` objects, which the
        worker replaces with the inputs' results.
    :return: the futures, in the order of ``messages``, tracked at once (as
        :func:`flask_execute_send` does; get each with ``message.make_future(app, pm)``).

    First result wins. The default (the ``dependencies`` plugin) keeps each message in
    the result backend (Redis) until its inputs are done, and has it published by
    whoever sees the last input end: this process, the worker that ran a dependent
    input, or a worker's sweep once a second, so the dependency survives the web
    process. Unanswered, a call with Futures among its arguments fails at ``submit``
    with :exc:`~flask_execute.ConfigurationError` and nothing is sent. Never called
    in eager mode (the inputs are done: the call is sent at once).
    """


@hookspec
def flask_execute_prepare_send(app: Flask) -> None:
    """Prepare for the first message this process sends for this application.

    :param app: the Flask application about to send.

    Called once per process and application, before the first message goes out (never
    in eager mode); the local-services plugin starts workers here. A failure raised here
    propagates to the first ``submit``.
    """


@hookspec(firstresult=True)
def flask_execute_run_task(app: Flask, task: celery.Task, run: Callable[[], Any]) -> Any:
    """Run one task and return its result.

    :param app: the Flask application the task belongs to.
    :param task: the Celery task being run (its ``request`` is the current request).
    :param run: calls the task body and returns its result.

    First result wins; required. The default calls ``run()``. Wrap it with
    ``@hookimpl(wrapper=True)`` to run code around every task, as the default
    ``appcontext`` plugin does to push the Flask application context and bind
    :data:`~flask_execute.current_task`. Called in the worker for every task, and
    in-process in eager mode.
    """


# -- futures ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def flask_execute_make_future(app: Flask, task_id: str, name: str | None) -> Future:
    """Create the Future that stands for one task.

    :param app: the Flask application the task belongs to; pass
        ``AppState.of(app).futures`` as the Future's owner so it can be cancelled.
    :param task_id: the Celery task id.
    :param name: the task's display name (the submitted function's dotted name).
    :return: a :class:`~flask_execute.Future` (or a subclass).

    First result wins; required. Called for every sent task, for every call of a
    ``map`` (ids ``<chunk id>.<index>``) and by ``celery.get(task_id)``.
    """


@hookspec(firstresult=True)
def flask_execute_make_pool(app: Flask, futures: list[Future]) -> FuturePool:
    """Create the FuturePool returned by ``celery.map``.

    :param app: the Flask application of the calls.
    :param futures: the futures of the mapped calls, in order.

    First result wins; required.
    """


@hookspec(firstresult=True)
def flask_execute_cancel_task(app: Flask, task_id: str) -> bool:
    """Ask the workers to stop a task whose Future was cancelled.

    :param app: the Flask application the task belongs to.
    :param task_id: the task's id: a submitted or registered task, or a ``map`` chunk
        none of whose calls is still waiting (one call's cancel only marks the call for
        its chunk to skip).
    :return: ``True`` once the request is on its way; ``None`` to leave it to another
        plugin.

    First result wins. The default (the ``cancel`` plugin) marks the task cancelled in
    the result backend, so that ``current_task.cancelled`` turns true, lets Celery drop
    the message if it is still queued, and has the worker terminate the task once
    ``CELERY_CANCEL_GRACE`` has passed. Unanswered, Celery's
    ``revoke(task_id, terminate=True)`` terminates a running task at once. Called by
    ``future.cancel()`` before the Future is cancelled here; never in eager mode.
    """


@hookspec(firstresult=True)
def flask_execute_make_result_source(app: Flask) -> ResultSource:
    """Return the one object that watches the result backend for this application.

    :param app: the Flask application.
    :return: a :class:`~flask_execute.listener.ResultSource`; it feeds every Future of
        the application from one background thread (Redis pub/sub by default, polling
        for other backends).

    First result wins; required. Called once, when the first Future needs it; the
    source hands what it sees to ``AppState.of(app).futures.deliver``.
    """


@hookspec(firstresult=True)
def flask_execute_make_blueprint(
    app: Flask, name: str, authorize: Callable[[Any], bool] | None
) -> Blueprint:
    """Build the status blueprint that ``celery.blueprint()`` returns.

    :param app: the Flask application the extension serves.
    :param name: the blueprint's name (endpoints are ``<name>.status``,
        ``<name>.events``, ``<name>.cancel`` and ``<name>.script``).
    :param authorize: the application's own check, called with the
        :class:`~flask_execute.Future` or :class:`~flask_execute.FuturePool` a token
        names; a false answer must be served like an unknown token (404).
    :return: a :class:`flask.Blueprint` serving the status endpoint for tokens made by
        ``future.token`` / ``pool.token``.

    First result wins. The default ``status`` plugin serves JSON, server-sent events,
    cancel and its JavaScript helper; with no answer, ``celery.blueprint()`` raises
    :exc:`~flask_execute.ConfigurationError`.
    """


# -- local services --------------------------------------------------------------------


@hookspec
def flask_execute_describe_services(app: Flask) -> list[Service]:
    """Describe the local services this plugin contributes (workers, flower, beat).

    :param app: the Flask application.
    :return: service descriptions; an empty list when the plugin has none to run.

    Every plugin's answer is concatenated. Called by ``celery.start()``, on the first
    send when ``CELERY_START_LOCAL_WORKERS`` is on, and by ``flask celery cluster``.
    """


@hookspec(firstresult=True)
def flask_execute_make_supervisor(app: Flask) -> Supervisor:
    """Return the object that starts, watches and stops the application's local services.

    :param app: the Flask application.
    :return: a :class:`~flask_execute.services.Supervisor`; ``celery.start()``,
        ``stop()``, ``processes`` and ``logs`` go through it.

    First result wins; called once per application, on first use. Unanswered (the
    ``services`` plugin blocked), local services are off: ``celery.start()`` raises
    :exc:`~flask_execute.ServiceError`, ``stop()`` does nothing, ``processes`` and
    ``logs`` are empty, and ``status()`` still asks the workers.
    """


@hookspec
def flask_execute_add_command_defaults(app: Flask) -> Mapping[str, Mapping[str, Any]]:
    """Give defaults to the options of ``flask celery`` subcommands.

    :param app: the application the ``flask`` command loaded.
    :return: ``{command: {parameter name: value}}``, e.g.
        ``{"worker": {"loglevel": "debug"}}``: click's ``default_map`` for Celery's
        subcommands, so an option given on the command line still wins.

    Every plugin's answer is merged (earlier-registered plugins first, so later ones
    win per option). Called by every ``flask celery <command>``.
    """


@hookspec(firstresult=True)
def flask_execute_spawn_service(app: Flask, service: Service) -> ServiceProcess:
    """Start one local service and return a handle on its process.

    :param app: the Flask application.
    :param service: what to start.

    First result wins; the default runs ``sys.executable -m celery`` in its own process
    group, logging to the service's log file, tied to this process by a lifeline.
    """


@hookspec(firstresult=True)
def flask_execute_check_ready(app: Flask, service: Service, process: ServiceProcess) -> bool:
    """Tell whether a started service is ready to work.

    :param app: the Flask application.
    :param service: the service.
    :param process: its running process.
    :return: ``True`` once ready. Polled until ``CELERY_START_TIMEOUT``.

    First result wins; return ``None`` to leave the answer to another plugin. By
    default a service is ready when it reports so itself (workers on Celery's
    ``worker_ready`` signal, beat on ``beat_init``, through a pipe: no broker round
    trip); flower is ready when its HTTP port accepts connections.
    """


# -- scheduling ------------------------------------------------------------------------


@hookspec(firstresult=True)
def flask_execute_make_schedule(
    app: Flask, schedule: Any, crontab_kwargs: Mapping[str, Any]
) -> Any:
    """Turn the arguments of ``@celery.schedule(...)`` into a Celery schedule object.

    :param app: the Flask application.
    :param schedule: the positional argument (seconds, ``timedelta``, a schedule
        object) or ``None``.
    :param crontab_kwargs: crontab keywords (``hour``, ``minute``, ``day_of_week`` ...).
    :return: a ``celery.schedules`` schedule object.

    First result wins. Called at decoration time (or at ``init_app`` for schedules
    declared before it); raise :exc:`~flask_execute.ConfigurationError` on bad input.
    """


@hookspec
def flask_execute_add_beat_entries(app: Flask) -> Mapping[str, Any]:
    """Contribute entries to beat's schedule.

    :param app: the Flask application.
    :return: ``beat_schedule`` entries keyed by entry name.

    Every plugin's entries are merged into ``beat_schedule``, after
    ``CELERYBEAT_SCHEDULE`` from the config; called at ``init_app`` and again after
    each ``@celery.schedule`` on an application already registered.
    """
