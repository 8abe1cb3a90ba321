"""issue_token and principal_from_request inside a bare Flask app."""

import time
from collections.abc import Iterator

import jwt
import pytest
from flask import Flask
from werkzeug.exceptions import HTTPException

from rideshare.auth import Principal, issue_token, principal_from_request
from rideshare.cli import token_create

SECRET = "unit-test-secret-key-of-at-least-32-bytes"


@pytest.fixture
def app() -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, TOKEN_TTL_SECONDS=120)
    with app.app_context():
        yield app


def decode(token: str) -> dict:
    return jwt.decode(token, SECRET, algorithms=["HS256"])


def test_token_round_trips_with_subject_role_and_expiry(app):
    before = int(time.time())
    claims = decode(issue_token("42", "admin"))
    after = int(time.time())
    assert claims["sub"] == "42"
    assert claims["role"] == "admin"
    assert before <= claims["iat"] <= after
    assert claims["exp"] - claims["iat"] == 120


def test_role_defaults_to_user_and_ids_become_strings(app):
    claims = decode(issue_token(7))
    assert (claims["sub"], claims["role"]) == ("7", "user")


def test_explicit_ttl_wins_over_the_config(app):
    claims = decode(issue_token("42", ttl_seconds=5))
    assert claims["exp"] - claims["iat"] == 5


def test_token_is_signed_hs256_with_the_secret_key(app):
    token = issue_token("42")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-key-of-at-least-32-bytes", algorithms=["HS256"])


def test_negative_ttl_is_already_expired(app):
    with pytest.raises(jwt.ExpiredSignatureError):
        decode(issue_token("42", ttl_seconds=-10))


@pytest.mark.parametrize("role", ["root", "", "Admin", None])
def test_unknown_role_raises_value_error(app, role):
    with pytest.raises(ValueError, match="role must be one of user, viewer, admin"):
        issue_token("42", role)


def test_unknown_role_is_refused_before_the_app_is_needed():
    with pytest.raises(ValueError):
        issue_token("42", "root")


# --- reading the header ----------------------------------------------------------


def test_principal_from_a_valid_header(app):
    with app.test_request_context(headers={"Authorization": f"Bearer {issue_token('42', 'admin')}"}):
        principal = principal_from_request()
    assert principal == Principal("42", "admin")
    assert principal.is_admin


def test_a_viewer_token_reads_but_is_not_an_admin(app):
    with app.test_request_context(headers={"Authorization": f"Bearer {issue_token('9', 'viewer')}"}):
        principal = principal_from_request()
    assert principal == Principal("9", "viewer")
    assert principal.can_view and not principal.is_admin
    assert Principal("1", "admin").can_view and not Principal("42", "user").can_view


def test_the_cli_issues_a_viewer_token(app):
    result = app.test_cli_runner().invoke(token_create, ["--user", "9", "--role", "viewer"])
    assert result.exit_code == 0, result.output
    assert decode(result.output.strip())["role"] == "viewer"
    refused = app.test_cli_runner().invoke(token_create, ["--user", "9", "--role", "root"])
    assert refused.exit_code != 0 and "viewer" in refused.output


def test_no_header_is_no_principal(app):
    with app.test_request_context():
        assert principal_from_request() is None


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Basic abc", "Authorization must be 'Bearer <token>'"),
        ("Bearer ", "Authorization must be 'Bearer <token>'"),
        ("Bearer abc", "token is not valid"),
    ],
)
def test_bad_headers_are_401(app, header, message):
    with app.test_request_context(headers={"Authorization": header}), pytest.raises(HTTPException) as caught:
        principal_from_request()
    assert caught.value.code == 401
    assert caught.value.data["message"] == message
    assert caught.value.data["headers"]["WWW-Authenticate"].startswith("Bearer")


def test_expired_token_is_401_saying_so(app):
    header = f"Bearer {issue_token('42', ttl_seconds=-1)}"
    with app.test_request_context(headers={"Authorization": header}), pytest.raises(HTTPException) as caught:
        principal_from_request()
    assert caught.value.data["message"] == "token has expired"


def test_a_token_for_an_unknown_role_is_401(app):
    now = int(time.time())
    forged = jwt.encode({"sub": "42", "role": "root", "exp": now + 60}, SECRET, algorithm="HS256")
    with (
        app.test_request_context(headers={"Authorization": f"Bearer {forged}"}),
        pytest.raises(HTTPException) as caught,
    ):
        principal_from_request()
    assert caught.value.data["message"] == "token has an unknown role"
