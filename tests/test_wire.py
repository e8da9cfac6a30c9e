"""Signed tokens: nothing forged or tampered is ever unpickled."""

from __future__ import annotations

import base64
import os
import stat

import cloudpickle
import pytest
from flask import Flask
from flask_execute.plugins.serializer import CloudpickleSerializer

from flask_execute import Celery, SerializationError, SignatureError
from flask_execute.signing import KEY_FILE, Signer, signing_keys
from flask_execute.wire import Wire


class Tripwire:
    """Unpickling this creates a file: proof that a payload was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def wire(*keys: bytes) -> Wire:
    return Wire(CloudpickleSerializer(), Signer(list(keys)))


def test_roundtrip_of_calls_results_and_errors():
    w = wire(b"k")
    fn, args, kwargs = w.unpack_call(w.pack_call(divmod, (7, 2), {}))
    assert fn(*args, **kwargs) == (3, 1)
    assert w.unpack_result(w.pack_result({"a": (1, 2)})) == {"a": (1, 2)}
    try:
        raise KeyError("missing")
    except KeyError as exc:
        rebuilt = w.unpack_error(w.pack_error(exc))
    assert type(rebuilt) is KeyError and rebuilt.args == ("missing",)
    assert "raise KeyError" in str(rebuilt.__cause__)


def test_forged_token_is_rejected_before_unpickling(tmp_path):
    trip = tmp_path / "unpickled"
    forged = wire(b"attacker").pack_call(print, (Tripwire(str(trip)),), {})
    with pytest.raises(SignatureError):
        wire(b"ours").unpack_call(forged)
    raw = bytearray(base64.urlsafe_b64decode(wire(b"ours").pack_result(1)["flask_execute"]))
    raw[-1] ^= 1  # flip one bit of the payload
    tampered = {"flask_execute": base64.urlsafe_b64encode(bytes(raw)).decode()}
    with pytest.raises(SignatureError):
        wire(b"ours").unpack_result(tampered)
    unsigned = base64.urlsafe_b64encode(b"\0" * 32 + cloudpickle.dumps(Tripwire(str(trip))))
    with pytest.raises(SignatureError):
        wire(b"ours").unpack_call(unsigned.decode())
    with pytest.raises(SignatureError):
        wire(b"ours").unpack_call("not base64 at all!")
    assert not trip.exists()


def test_a_token_of_one_kind_is_not_accepted_as_another():
    w = wire(b"k")
    result_token = w.pack_result(print)["flask_execute"]
    with pytest.raises(SignatureError):
        w.unpack_call(result_token)


def test_key_rotation_old_tokens_still_verify():
    old = wire(b"old").pack_result(5)
    assert wire(b"new", b"old").unpack_result(old) == 5
    with pytest.raises(SignatureError):
        wire(b"old").unpack_result(wire(b"new", b"old").pack_result(6))


def test_keys_from_config_secret_key_or_development_file(tmp_path):
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["CELERY_SIGNING_KEYS"] = ["one", "two"]
    assert signing_keys(app) == [b"one", b"two"]
    app.config["CELERY_SIGNING_KEYS"] = None
    app.config["SECRET_KEY"] = "secret"
    derived = signing_keys(app)
    assert derived != [b"secret"] and len(derived[0]) == 32
    app.config["SECRET_KEY"] = None
    key = signing_keys(app)
    path = tmp_path / "instance" / KEY_FILE
    assert path.read_bytes() == key[0] and len(key[0]) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert signing_keys(app) == key  # stable across calls and processes


def test_unserializable_argument_fails_at_submit_naming_it(broker_url, redis_db):
    import threading

    import redis

    app = Flask(__name__)
    app.config.update(
        CELERY_BROKER_URL=broker_url,
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_DEFAULT_QUEUE="nothing-published",
        SECRET_KEY="x",
    )
    celery = Celery(app)
    lock = threading.Lock()
    with pytest.raises(SerializationError, match=r"positional argument 1 .*lock"):
        celery.submit(print, 1, lock)
    with pytest.raises(SerializationError, match="keyword argument 'guard'"):
        celery.submit(print, guard=lock)
    with pytest.raises(SerializationError, match="positional argument 0"):
        celery.map(print, [1], [lock])  # nothing of the map is sent either
    client = redis.Redis(host="127.0.0.1", port=6379, db=redis_db)
    assert client.llen("nothing-published") == 0
    assert celery.state().futures.pending_ids() == []
