"""The pluggy core: defaults by name, blocking, app-local and entry-point plugins."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
from flask import Flask

from flask_execute import Celery, hookimpl
from flask_execute.manager import DEFAULT_PLUGINS, PluginManager
from tests import helpers


def test_every_default_plugin_is_registered_by_name():
    pm = PluginManager(load_entry_points=False)
    for name, module in DEFAULT_PLUGINS:
        plugin = pm.get_plugin(name)
        assert plugin is not None, name
        assert plugin.__name__ == module


def test_a_default_can_be_blocked_from_config():
    app = Flask(__name__)
    app.config.update(CELERY_ALWAYS_EAGER=True, CELERY_DISABLED_PLUGINS=["appcontext"])
    celery = Celery(app)
    pm = app.extensions["flask_execute"].pm
    assert pm.get_plugin("appcontext") is None
    assert pm.is_blocked("appcontext")
    # without the app-context plugin the task body runs with no app context pushed
    from flask import has_app_context

    assert celery.submit(has_app_context).result(timeout=5) is False


class Upper:
    """An app-local plugin wrapping every task run."""

    @hookimpl(wrapper=True)
    def flask_execute_run_task(self, app, task, run):
        result = yield
        return result.upper() if isinstance(result, str) else result


def test_app_local_plugin_wraps_task_runs():
    app = Flask(__name__)
    app.config["CELERY_ALWAYS_EAGER"] = True
    celery = Celery(app, plugins=[Upper()])
    assert celery.submit(str.lower, "Hello").result(timeout=5) == "HELLO"


def test_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def flask_execute_run_tsak(self, app):
            pass

    app = Flask(__name__)
    with pytest.raises(Exception, match="flask_execute_run_tsak"):
        Celery(app, plugins=[Typo()])


PLUGIN_DIST = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "flask-execute-reverse"
        version = "0.1"

        [project.entry-points.flask_execute]
        reverse = "flask_execute_reverse"

        [tool.setuptools]
        py-modules = ["flask_execute_reverse"]
    """,
    "flask_execute_reverse.py": """
        import pickle
        import cloudpickle
        from flask_execute import hookimpl

        class ReversedPickle:
            name = "reversed-cloudpickle"
            def dumps(self, obj):
                return cloudpickle.dumps(obj)[::-1]
            def loads(self, data):
                return pickle.loads(data[::-1])

        @hookimpl
        def flask_execute_make_serializer(app):
            return ReversedPickle()
    """,
}


@pytest.mark.timeout(180)
def test_entry_point_plugin_overrides_the_default_serializer(tmp_path):
    src = tmp_path / "dist"
    src.mkdir()
    for name, text in PLUGIN_DIST.items():
        (src / name).write_text(textwrap.dedent(text))
    target = tmp_path / "site"
    # --no-build-isolation: built offline with the environment's setuptools, which must
    # provide bdist_wheel itself (>= 70.1, pinned in the test extra; older ones need the
    # separate `wheel` distribution and fail with "invalid command 'bdist_wheel'").
    helpers.pip_install_target(src, target, "--no-build-isolation")
    script = textwrap.dedent("""
        from flask import Flask
        from flask_execute import Celery
        app = Flask("ep")
        app.config["CELERY_ALWAYS_EAGER"] = True
        celery = Celery(app)
        state = app.extensions["flask_execute"]
        print(state.pm.get_plugin("reverse") is not None, state.wire.serializer.name,
              celery.submit(lambda: 6 * 7).result(timeout=5))
    """)
    env = helpers.test_env(PYTHONPATH=f"{target}:{helpers.ROOT}")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "reversed-cloudpickle", "42"]


def test_trace_hooks_logs_every_hook_call(caplog):
    app = Flask(__name__)
    app.config.update(CELERY_ALWAYS_EAGER=True, CELERY_TRACE_HOOKS=True)
    with caplog.at_level(logging.DEBUG, logger="flask_execute.hooks"):
        celery = Celery(app)
        celery.submit(pow, 2, 3).result(timeout=5)
    traced = caplog.text
    for hook in ("flask_execute_configure_celery", "flask_execute_send", "flask_execute_run_task"):
        assert hook in traced, hook
    quiet = Flask("quiet")
    quiet.config["CELERY_ALWAYS_EAGER"] = True
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="flask_execute.hooks"):
        Celery(quiet).submit(pow, 2, 3).result(timeout=5)
    assert "flask_execute_send" not in caplog.text


def test_plugin_registered_always_unregisters():
    from flask_execute.testing import plugin_registered

    app = Flask(__name__)
    app.config.update(CELERY_ALWAYS_EAGER=True, CELERY_DISABLED_PLUGINS=["blocked-name"])
    celery = Celery(app)
    pm = celery.state().pm
    upper = Upper()
    with pytest.raises(ZeroDivisionError), plugin_registered(app, upper) as registered:
        assert registered is upper and pm.is_registered(upper)
        assert celery.submit(str.lower, "Hi").result(timeout=5) == "HI"
        raise ZeroDivisionError
    assert not pm.is_registered(upper)
    assert celery.submit(str.lower, "Hi").result(timeout=5) == "hi"

    class Typo:
        @hookimpl
        def flask_execute_run_tsak(self, app):
            pass

    with pytest.raises(Exception, match="flask_execute_run_tsak"), plugin_registered(app, Typo()):
        pass
    assert [p for p in pm.get_plugins() if isinstance(p, Typo)] == []
    with (
        pytest.raises(ValueError, match="blocked"),
        plugin_registered(app, Upper(), "blocked-name"),
    ):
        pass
