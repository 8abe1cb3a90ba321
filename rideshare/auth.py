"""Bearer tokens signed with SECRET_KEY: who is calling, and with which role."""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import jwt
from flask import current_app, g, request, session
from flask_smorest import abort
from werkzeug.exceptions import HTTPException

# viewer: the dashboard and the admin API's reads; every change needs admin.
ROLES = ("user", "viewer", "admin")
VIEW_ROLES = ("viewer", "admin")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """The caller a valid token names."""

    id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_view(self) -> bool:
        """May read the admin API and the dashboard (viewer or admin)."""
        return self.role in VIEW_ROLES


def issue_token(user_id: str, role: str = "user", ttl_seconds: int | None = None) -> str:
    """A signed token for user_id that expires after ttl_seconds (default TOKEN_TTL_SECONDS)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = int(time.time())
    ttl = ttl_seconds if ttl_seconds is not None else current_app.config["TOKEN_TTL_SECONDS"]
    claims = {"sub": str(user_id), "role": role, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, current_app.config["SECRET_KEY"], algorithm="HS256")


def _unauthorized(message: str) -> None:
    abort(401, message=message, headers={"WWW-Authenticate": 'Bearer realm="rideshare"'})


def principal_from_request() -> Principal | None:
    """The caller named by the Authorization header; None without one, 401 for a bad one."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        _unauthorized("Authorization must be 'Bearer <token>'")
    return decode_token(token.strip())


def decode_token(token: str) -> Principal:
    """The caller a token names; 401 if it is invalid, expired or has an unknown role."""
    try:
        claims = jwt.decode(
            token,
            current_app.config["SECRET_KEY"],
            algorithms=["HS256"],
            options={"require": ["sub", "exp", "role"]},
        )
    except jwt.ExpiredSignatureError:
        _unauthorized("token has expired")
    except jwt.InvalidTokenError:
        _unauthorized("token is not valid")
    if claims["role"] not in ROLES:
        _unauthorized("token has an unknown role")
    return Principal(id=str(claims["sub"]), role=claims["role"])


def login_required(view: F) -> F:
    """Reject the request with 401 unless it carries a valid token; sets g.user."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.user = principal_from_request()
        if g.user is None:
            _unauthorized("a bearer token is required")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def login_optional(view: F) -> F:
    """Read a token if there is one (a bad one still gets 401); sets g.user or None."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.user = principal_from_request()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def principal_from_session() -> Principal | None:
    """The dashboard's caller: the token kept in the signed session cookie, checked again now."""
    token = session.get("token")
    if not token:
        return None
    try:
        return decode_token(token)
    except HTTPException:
        session.pop("token", None)
        raise


def csrf_token() -> str:
    """This session's CSRF token, for forms posted with cookie authentication."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def _role_required(roles: tuple[str, ...], refusal: str) -> Callable[[F], F]:
    """401 without a valid token (header or dashboard session), 403 unless its role is one of roles.

    The role is checked on every request. A request other than a read made with
    the session cookie must also carry the session's CSRF token.
    """

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = principal_from_request()
            by_cookie = user is None
            if by_cookie:
                user = principal_from_session()
            if user is None:
                _unauthorized("a bearer token is required")
            if user.role not in roles:
                abort(403, message=refusal)
            if by_cookie and request.method not in ("GET", "HEAD", "OPTIONS"):
                sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
                if not secrets.compare_digest(sent, session.get("csrf", "")) or not sent:
                    abort(403, message="missing or wrong CSRF token")
            g.user = user
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


# Every change (retry, delete, clean, pause) needs admin; reads need viewer or admin.
admin_required = _role_required(("admin",), "admin role required")
viewer_required = _role_required(VIEW_ROLES, "viewer or admin role required")


def current_user() -> Principal:
    """The authenticated caller of this request."""
    return g.user


def current_actor() -> str:
    """The caller as the audit log names it: 'user:<id>'."""
    return f"user:{current_user().id}"
