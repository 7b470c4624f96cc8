"""API keys from the outside of the helpers the middleware, the live stream and the jobs share: which
header carries a key, which keys are accepted, what a refusal says, who owns a job."""

from __future__ import annotations

import hashlib

from starlette.types import Scope

from service.exceptions import Forbidden, Unauthorized
from service.http.auth import key_accepted, key_refusal, owner_of, presented_key

KEY = "fer-test-key-3f9a"
KEY_SHA256 = hashlib.sha256(KEY.encode()).hexdigest()
OTHER_SHA256 = hashlib.sha256(b"someone else").hexdigest()


def scope_with(*headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "path": "/predict", "headers": list(headers)}


def test_a_key_comes_from_x_api_key_or_a_bearer_authorization() -> None:
    assert presented_key(scope_with((b"x-api-key", b" fer-key "))) == "fer-key"
    assert presented_key(scope_with((b"authorization", b"Bearer fer-key"))) == "fer-key"
    assert presented_key(scope_with((b"authorization", b"bearer  fer-key "))) == "fer-key"  # any case, spaces
    # X-API-Key wins over Authorization when both come.
    both = scope_with((b"authorization", b"Bearer other"), (b"x-api-key", b"fer-key"))
    assert presented_key(both) == "fer-key"


def test_no_key_is_none_whatever_else_comes() -> None:
    assert presented_key(scope_with()) is None
    assert presented_key({"type": "http", "path": "/predict"}) is None  # a scope without headers
    assert presented_key(scope_with((b"x-api-key", b"   "))) is None
    assert presented_key(scope_with((b"authorization", b"Bearer "))) is None
    # Another scheme's credentials are not a key (Basic's base64 would otherwise be checked as one).
    assert presented_key(scope_with((b"authorization", b"Basic " + KEY.encode()))) is None
    assert presented_key(scope_with((b"authorization", KEY.encode()))) is None


def test_a_key_is_accepted_when_its_hash_is_any_configured_one() -> None:
    assert key_accepted(KEY, (OTHER_SHA256, KEY_SHA256))
    assert not key_accepted(KEY, (OTHER_SHA256,))
    assert not key_accepted(KEY.upper(), (KEY_SHA256,))
    # A stream's first message is JSON, whose strings may hold lone surrogates: refused, not a crash.
    assert not key_accepted("\udcff" + KEY, (KEY_SHA256,))


def test_a_refusal_says_what_was_wrong_and_how_to_send_a_key() -> None:
    missing = key_refusal(None, (KEY_SHA256,))
    assert isinstance(missing, Unauthorized)
    assert str(missing) == "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'"
    wrong = key_refusal("not-the-key", (KEY_SHA256,))
    assert isinstance(wrong, Forbidden) and str(wrong) == "the API key is not accepted"
    assert key_refusal(KEY, (KEY_SHA256,)) is None


def test_a_job_belongs_to_the_hash_of_the_key_that_sent_it() -> None:
    assert owner_of(scope_with((b"x-api-key", KEY.encode()))) == KEY_SHA256
    assert owner_of(scope_with((b"authorization", f"Bearer {KEY}".encode()))) == KEY_SHA256
    assert owner_of(scope_with()) == ""
