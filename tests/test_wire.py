"""Signed tokens: nothing forged or tampered is ever unpickled."""

from __future__ import annotations

import json
import os
import stat

import cloudpickle
import pytest
from flask import Flask
from itsdangerous import base64_decode, base64_encode

from flask_execute import Celery, ConfigurationError, SerializationError, SignatureError
from flask_execute.errors import RemoteError
from flask_execute.plugins.serializer import CloudpickleSerializer
from flask_execute.signing import KEY_FILE, Signer, signing_keys
from flask_execute.wire import Wire

ID = "3f1c9a52-task"


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
    fn, args, kwargs = w.unpack_call(w.pack_call(divmod, (7, 2), {}, task_id=ID), task_id=ID)
    assert fn(*args, **kwargs) == (3, 1)
    assert w.unpack_result(w.pack_result({"a": (1, 2)}, task_id=ID), task_id=ID) == {"a": (1, 2)}
    try:
        raise KeyError("missing")
    except KeyError as exc:
        rebuilt = w.unpack_error(w.pack_error(exc, task_id=ID), task_id=ID)
    assert type(rebuilt) is KeyError and rebuilt.args == ("missing",)
    assert "raise KeyError" in str(rebuilt.__cause__)


def test_forged_token_is_rejected_before_unpickling(tmp_path):
    trip = tmp_path / "unpickled"
    forged = wire(b"attacker").pack_call(print, (Tripwire(str(trip)),), {}, task_id=ID)
    with pytest.raises(SignatureError, match="does not match"):
        wire(b"ours").unpack_call(forged, task_id=ID)
    token = wire(b"ours").pack_result(1, task_id=ID)["flask_execute"]
    version, claims, data, stamp, signature = token.split(".")
    raw = bytearray(base64_decode(data))
    raw[-1] ^= 1  # flip one bit of the payload, keep its genuine signature
    flipped = base64_encode(bytes(raw)).decode()
    tampered = {"flask_execute": ".".join((version, claims, flipped, stamp, signature))}
    with pytest.raises(SignatureError, match="does not match"):
        wire(b"ours").unpack_result(tampered, task_id=ID)
    pickle = base64_encode(cloudpickle.dumps(Tripwire(str(trip)))).decode()
    zeros = base64_encode(b"\0" * 32).decode()
    for unsigned in (pickle, f"{pickle}.", f"{pickle}.{zeros}", f"v3.{pickle}.{zeros}"):
        with pytest.raises(SignatureError):
            wire(b"ours").unpack_call(unsigned, task_id=ID)
    for garbage in ("not base64 at all!", "a.b.c", "v3.a.b.c", "", None, 5, ["x.y"]):
        with pytest.raises(SignatureError):
            wire(b"ours").unpack_call(garbage, task_id=ID)
    assert not trip.exists()


def test_a_token_of_one_kind_is_not_accepted_as_another():
    w = wire(b"k")
    result_token = w.pack_result(print, task_id=ID)["flask_execute"]
    with pytest.raises(SignatureError):
        w.unpack_call(result_token, task_id=ID)
    call_token = w.pack_call(print, (), {}, task_id=ID)
    with pytest.raises(SignatureError):
        w.unpack_result({"flask_execute": call_token}, task_id=ID)
    with pytest.raises(SignatureError):
        w.unpack_error(RemoteError(call_token, "print"), task_id=ID)
    signer = Signer([b"k"])  # the separation is the signer's, whatever the wire asks
    with pytest.raises(SignatureError):
        signer.verify(signer.sign(b"data", b"call:x", task_id=ID), b"result:x", task_id=ID)


def test_token_is_ascii_text_that_json_carries_as_is():
    token = wire(b"k").pack_call(divmod, (b"\0\xff", "\u00e9"), {}, task_id=ID)
    assert token.isascii() and json.dumps(token) == f'"{token}"'


def test_key_rotation_old_tokens_still_verify():
    old = wire(b"old").pack_result(5, task_id=ID)
    assert wire(b"new", b"old").unpack_result(old, task_id=ID) == 5
    with pytest.raises(SignatureError):
        wire(b"old").unpack_result(wire(b"new", b"old").pack_result(6, task_id=ID), task_id=ID)


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


def app_wire(tmp_path, **config) -> Wire:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    return Wire(CloudpickleSerializer(), Signer(signing_keys(app)))


def test_signing_keys_rotation_first_signs_every_one_verifies(tmp_path):
    old = app_wire(tmp_path, CELERY_SIGNING_KEYS="old").pack_result(1, task_id=ID)
    rotating = app_wire(tmp_path, CELERY_SIGNING_KEYS=["new", "old"])
    assert rotating.unpack_result(old, task_id=ID) == 1
    new = rotating.pack_result(2, task_id=ID)
    assert app_wire(tmp_path, CELERY_SIGNING_KEYS=["new"]).unpack_result(new, task_id=ID) == 2
    with pytest.raises(SignatureError):
        app_wire(tmp_path, CELERY_SIGNING_KEYS=["old"]).unpack_result(new, task_id=ID)
    with pytest.raises(SignatureError):  # the old key removed, its tokens stop verifying
        app_wire(tmp_path, CELERY_SIGNING_KEYS=["new"]).unpack_result(old, task_id=ID)


def test_secret_key_fallbacks_verify_but_never_sign(tmp_path):
    old = app_wire(tmp_path, SECRET_KEY="old").pack_result(1, task_id=ID)
    rotated = app_wire(tmp_path, SECRET_KEY="new", SECRET_KEY_FALLBACKS=["old"])
    assert rotated.unpack_result(old, task_id=ID) == 1
    with pytest.raises(SignatureError):
        app_wire(tmp_path, SECRET_KEY="new").unpack_result(old, task_id=ID)
    new = rotated.pack_result(2, task_id=ID)
    assert app_wire(tmp_path, SECRET_KEY="new").unpack_result(new, task_id=ID) == 2
    with pytest.raises(SignatureError):
        app_wire(tmp_path, SECRET_KEY="old").unpack_result(new, task_id=ID)
    # CELERY_SIGNING_KEYS, when set, is the whole list: SECRET_KEY's fallbacks do not apply.
    explicit = app_wire(
        tmp_path, CELERY_SIGNING_KEYS="k" * 32, SECRET_KEY="new", SECRET_KEY_FALLBACKS=["old"]
    )
    with pytest.raises(SignatureError):
        explicit.unpack_result(old, task_id=ID)


def test_derived_keys_are_never_the_secrets_and_empty_keys_are_refused(tmp_path):
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="new", SECRET_KEY_FALLBACKS=["", "old"])
    keys = signing_keys(app)
    assert len(keys) == 2 and not {b"new", b"old"} & set(keys)  # the empty one is skipped
    app.config["SECRET_KEY_FALLBACKS"] = "old"  # one key, not the keys "o", "l", "d"
    assert signing_keys(app) == keys
    for bad in ([], [b"k", b""]):
        with pytest.raises(ConfigurationError, match="CELERY_SIGNING_KEYS"):
            Signer(bad)


def test_unserializable_argument_fails_at_submit_naming_it(broker_url, redis_db):
    import threading

    import redis

    app = Flask(__name__)
    app.config.update(
        CELERY_BROKER_URL=broker_url,
        CELERY_START_LOCAL_WORKERS=False,
        CELERY_DEFAULT_QUEUE="nothing-published",
        SECRET_KEY="test-secret-key-of-32-bytes-or-more",
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


def test_every_token_is_bound_to_its_task_id(tmp_path):
    trip = tmp_path / "unpickled"
    w = wire(b"k")
    call = w.pack_call(print, (Tripwire(str(trip)),), {}, task_id=ID)
    result = w.pack_result(Tripwire(str(trip)), task_id=ID)
    error = w.pack_error(ValueError("boom"), task_id=ID)
    for refused in (
        lambda: w.unpack_call(call, task_id="other"),
        lambda: w.unpack_result(result, task_id="other"),
        lambda: w.unpack_error(error, task_id="other"),
    ):
        with pytest.raises(SignatureError, match=f"made for task {ID!r}, not 'other'"):
            refused()
    assert not trip.exists()
    assert isinstance(w.unpack_error(error, task_id=ID), ValueError)


def test_a_call_expires_counting_from_signing_or_from_when_it_is_due(monkeypatch):
    import time

    w, clock = wire(b"k"), [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    now = w.pack_call(abs, (-1,), {}, task_id=ID)
    later = w.pack_call(abs, (-2,), {}, task_id=ID, due=clock[0] + 100)
    result = w.pack_result(3, task_id=ID)
    clock[0] += 60
    assert w.unpack_call(now, task_id=ID, max_age=60)[1] == (-1,)
    clock[0] += 1.5
    with pytest.raises(
        SignatureError, match=r"token expired: 62s old.*CELERY_TOKEN_MAX_AGE \(60s\)"
    ):
        w.unpack_call(now, task_id=ID, max_age=60)
    assert w.unpack_call(now, task_id=ID)[1] == (-1,)  # no max age, no expiry
    clock[0] += 100  # 161.5s after signing, 61.5s after it was due
    with pytest.raises(SignatureError, match="token expired: 62s old"):
        w.unpack_call(later, task_id=ID, max_age=60)
    assert w.unpack_call(later, task_id=ID, max_age=62)[1] == (-2,)
    assert w.unpack_result(result, task_id=ID) == 3  # results never expire this way
    renewed = w.renew_call(now, task_id=ID, due=None)  # a retry: signed again, now
    assert w.unpack_call(renewed, task_id=ID, max_age=1)[1] == (-1,)
    with pytest.raises(SignatureError, match="made for task"):
        w.renew_call(now, task_id="other", due=None)


def test_the_version_comes_first_and_an_unknown_one_is_named(tmp_path):
    trip = tmp_path / "unpickled"
    w = wire(b"k")
    token = w.pack_call(print, (Tripwire(str(trip)),), {}, task_id=ID)
    version, _, rest = token.partition(".")
    assert version == "v3"
    with pytest.raises(SignatureError, match=r"token format v4 is not .* reads \(v3\)"):
        w.unpack_call(f"v4.{rest}", task_id=ID)
    with pytest.raises(SignatureError, match="Upgrade the workers and the web processes"):
        w.unpack_call(f"v2.{rest}", task_id=ID)
    with pytest.raises(SignatureError, match="no version"):
        w.unpack_call(rest, task_id=ID)  # the pre-v3 layout: no version in front
    signed, _, signature = rest.rpartition(".")
    forged = ("B" if signature[0] == "A" else "A") + signature[1:]
    with pytest.raises(SignatureError, match="does not match"):
        w.unpack_call(f"v3.{signed}.{forged}", task_id=ID)
    assert not trip.exists()
