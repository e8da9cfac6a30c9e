"""CELERY_* keys reach Celery in old and new spellings; the extension's own keys do not."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from flask_execute import Celery, ConfigurationError
from flask_execute.config import celery_setting_name


def make(**config):
    app = Flask(__name__)
    app.config.update(CELERY_START_LOCAL_WORKERS=False, **config)
    return app, Celery(app)


@pytest.mark.parametrize(
    ("key", "setting"),
    [
        ("CELERY_ALWAYS_EAGER", "task_always_eager"),
        ("CELERY_TASK_ALWAYS_EAGER", "task_always_eager"),
        ("CELERYD_CONCURRENCY", "worker_concurrency"),
        ("CELERY_WORKER_CONCURRENCY", "worker_concurrency"),
        ("CELERY_BROKER_URL", "broker_url"),
        ("BROKER_URL", "broker_url"),
        ("CELERY_RESULT_BACKEND", "result_backend"),
        ("CELERYBEAT_SCHEDULE", "beat_schedule"),
        ("CELERY_TASK_DEFAULT_QUEUE", "task_default_queue"),
    ],
)
def test_old_and_new_spellings_translate(key, setting):
    assert celery_setting_name(key) == setting


def test_settings_reach_the_celery_app(broker_url):
    app, celery = make(
        CELERY_ALWAYS_EAGER=True,
        CELERYD_CONCURRENCY=7,
        CELERY_BROKER_URL=broker_url,
        CELERY_TASK_DEFAULT_QUEUE="elsewhere",
        CELERY_RESULT_EXPIRES=123,
    )
    conf = celery.celery_app.conf
    assert conf.task_always_eager is True
    assert conf.worker_concurrency == 7
    assert conf.broker_url == broker_url
    assert conf.result_backend == broker_url  # defaults to the Redis broker
    assert conf.task_default_queue == "elsewhere"
    assert conf.result_expires == 123


def test_wire_stays_json_only():
    _, celery = make()
    conf = celery.celery_app.conf
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert "pickle" not in conf.accept_content
    assert "pickle" not in conf.result_accept_content


def test_own_keys_get_defaults_and_are_not_forwarded():
    app, celery = make()
    assert app.config["CELERY_SUBMIT_TIMEOUT"] == 10.0
    assert app.config["CELERY_SIGNING_KEYS"] is None
    conf = celery.celery_app.conf
    for key in ("submit_timeout", "signing_keys", "disabled_plugins", "start_local_workers"):
        assert key not in conf


def test_unknown_celery_key_is_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="flask_execute"):
        make(CELERY_TASK_ALWAYS_EAGRE=True)
    assert "CELERY_TASK_ALWAYS_EAGRE" in caplog.text
    assert "CELERY_TASK_ALWAYS_EAGER" in caplog.text  # the suggestion


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CELERY_SUBMIT_TIMEOUT", "soon"),
        ("CELERY_SUBMIT_TIMEOUT", 0),
        ("CELERY_DISABLED_PLUGINS", "eager"),
        ("CELERY_SIGNING_KEYS", 42),
        ("CELERY_START_TIMEOUT", -1),
        ("CELERY_LOG_LEVEL", "loud"),
        ("CELERY_LOG_DIR", 3),
        ("CELERY_FLOWER_PORT", 70000),
        ("CELERY_FLOWER_ADDRESS", None),
        ("CELERY_CANCEL_GRACE", -1),
        ("CELERY_CANCEL_GRACE", "10"),
        ("CELERY_CANCEL_GRACE", float("inf")),
    ],
)
def test_bad_values_fail_at_init_app_naming_the_key(key, value):
    app = Flask(__name__)
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=key):
        Celery(app)
    assert "flask_execute" not in app.extensions


def test_factory_pattern_and_several_apps():
    celery = Celery()
    first, second = Flask("first"), Flask("second")
    first.config.update(CELERY_ALWAYS_EAGER=True, CELERY_TASK_DEFAULT_QUEUE="one")
    second.config.update(CELERY_ALWAYS_EAGER=True, CELERY_TASK_DEFAULT_QUEUE="two")
    celery.init_app(first)
    celery.init_app(second)
    assert first.extensions["celery"] is celery is second.extensions["celery"]
    states = [app.extensions["flask_execute"] for app in (first, second)]
    assert states[0] is not states[1]
    assert states[0].celery_app is not states[1].celery_app
    with first.app_context():
        assert celery.celery_app.conf.task_default_queue == "one"
        assert celery.submit(lambda: "from first").result(timeout=5) == "from first"
    with second.app_context():
        assert celery.celery_app.conf.task_default_queue == "two"
    with pytest.raises(RuntimeError, match="application context"):
        celery.submit(lambda: None)


def test_registering_twice_is_an_error():
    app, celery = make()
    with pytest.raises(RuntimeError, match="already registered"):
        celery.init_app(app)


LONG_KEY = "k" * 32


@pytest.mark.parametrize(
    ("config", "key", "reason"),
    [
        ({"CELERY_ACCEPT_CONTENT": ["json", "pickle"]}, "CELERY_ACCEPT_CONTENT", "pickle"),
        ({"CELERY_TASK_SERIALIZER": "pickle"}, "CELERY_TASK_SERIALIZER", "pickle"),
        ({"CELERY_RESULT_SERIALIZER": "pickle"}, "CELERY_RESULT_SERIALIZER", "pickle"),
        ({"CELERY_EVENT_SERIALIZER": "pickle"}, "CELERY_EVENT_SERIALIZER", "pickle"),
        ({"CELERY_TASK_ACCEPT_CONTENT": ["pickle"]}, "", ""),  # unknown key: warned, ignored
        (
            {"CELERY_RESULT_ACCEPT_CONTENT": ["application/x-python-serialize"]},
            "CELERY_RESULT_ACCEPT_CONTENT",
            "x-python-serialize",
        ),
        ({"CELERY_ACCEPT_CONTENT": "json,pickle"}, "CELERY_ACCEPT_CONTENT", "pickle"),
        ({"SECRET_KEY": "test-secret"}, "SECRET_KEY", "11-byte key"),
        ({"CELERY_SIGNING_KEYS": [LONG_KEY, "old"]}, "CELERY_SIGNING_KEYS", "3-byte key"),
        ({"SECRET_KEY": LONG_KEY, "SECRET_KEY_FALLBACKS": ["x"]}, "SECRET_KEY_FALLBACKS", "1-byte"),
        ({"CELERY_BROKER_URL": "redis://localhost:port/0"}, "CELERY_BROKER_URL", "Port"),
        ({"BROKER_URL": "localhost:6379"}, "BROKER_URL", "not a URL"),
        ({"CELERY_BROKER_URL": "redis://localhost/zero"}, "CELERY_BROKER_URL", "database"),
        ({"CELERY_BROKER_URL": "rediz://localhost"}, "CELERY_BROKER_URL", "rediz"),
        ({"CELERY_RESULT_BACKEND": "redis://localhost:x/0"}, "CELERY_RESULT_BACKEND", "Port"),
        ({"CELERY_RESULT_BACKEND": "rdis://localhost"}, "CELERY_RESULT_BACKEND", "rdis"),
        (
            {"CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": "3600"}},
            "CELERY_BROKER_TRANSPORT_OPTIONS",
            "visibility_timeout",
        ),
        ({"CELERYD_CONCURRENCY": "4"}, "CELERYD_CONCURRENCY", "'4'"),
        ({"CELERY_WORKER_PREFETCH_MULTIPLIER": "1"}, "CELERY_WORKER_PREFETCH_MULTIPLIER", "'1'"),
        ({"CELERY_TASK_TIME_LIMIT": "60"}, "CELERY_TASK_TIME_LIMIT", "number"),
        ({"CELERY_TOKEN_MAX_AGE": "60"}, "CELERY_TOKEN_MAX_AGE", "seconds"),
        ({"CELERY_MAX_PAYLOAD": 0}, "CELERY_MAX_PAYLOAD", "bytes"),
    ],
)
def test_dangerous_or_malformed_settings_fail_at_init_app(config, key, reason, redis_db):
    import redis

    app = Flask(__name__)
    app.config.update(CELERY_START_LOCAL_WORKERS=False, CELERY_DEFAULT_QUEUE="never-sent")
    app.config.update(config)
    if not key:  # a key Celery does not know never reaches it: nothing to refuse
        Celery(app)
        assert "pickle" not in app.extensions["celery"].celery_app.conf.accept_content
        return
    with pytest.raises(ConfigurationError, match=key) as caught:
        Celery(app)
    assert reason in str(caught.value)
    assert "flask_execute" not in app.extensions and "celery" not in app.extensions
    assert redis.Redis(host="127.0.0.1", port=6379, db=redis_db).llen("never-sent") == 0


def test_a_setting_made_unsafe_by_a_plugin_is_named_in_both_spellings():
    from flask_execute.markers import hookimpl

    class Unsafe:
        @hookimpl
        def flask_execute_configure_celery(self, app, settings):
            settings["result_serializer"] = "pickle"

    app = Flask(__name__)
    with pytest.raises(ConfigurationError, match=r"CELERY_RESULT_SERIALIZER \(result_serializer\)"):
        Celery(app, plugins=[Unsafe()])


def test_safe_settings_and_long_keys_pass():
    app, celery = make(
        SECRET_KEY=LONG_KEY,
        SECRET_KEY_FALLBACKS=["", "o" * 32],
        CELERY_ACCEPT_CONTENT=["json", "application/json", "msgpack"],
        CELERY_RESULT_BACKEND="redis+socket:///tmp/redis.sock",
        CELERY_BROKER_URL="redis://:p%40ss@localhost:6379/3;redis://other:6380/3",
        CELERY_BROKER_TRANSPORT_OPTIONS={"visibility_timeout": 3600, "sep": ":"},
        CELERYD_CONCURRENCY=4,
    )
    assert celery.celery_app.conf.worker_concurrency == 4
    assert app.config["CELERY_TOKEN_MAX_AGE"] == 86400
    assert app.config["CELERY_MAX_PAYLOAD"] == 16 * 2**20
