"""Rate limits on every route that creates jobs: per user and per IP, counted in Redis.

The limit is RATE_LIMIT_JOBS (e.g. "120/minute"); RATELIMIT_ENABLED=false turns
it off (load tests). When the limiter's Redis cannot be reached the limiter
fails open: a request is not refused for that alone, and any job it tries to
queue meets the same Redis and gets 503 with nothing stored.
"""

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import HTTPException

from rideshare.auth import principal_from_request

limiter = Limiter(key_func=get_remote_address)


def jobs_limit() -> str:
    return current_app.config["RATE_LIMIT_JOBS"]


def user_key() -> str:
    """The caller's user id; callers without a valid token are counted by IP."""
    try:
        user = principal_from_request()
    except HTTPException:
        user = None
    return f"user:{user.id}" if user else f"ip:{get_remote_address()}"


# Apply both to a MethodView with `decorators = [*job_limits, ...]`.
job_limits = [
    limiter.limit(jobs_limit, key_func=user_key, scope="jobs-user"),
    limiter.limit(jobs_limit, key_func=get_remote_address, scope="jobs-ip"),
]


def init_app(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    app.config.setdefault("RATELIMIT_KEY_PREFIX", f"{app.config['JOB_KEY_PREFIX']}:ratelimit")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)  # fail open, see the module docstring
    limiter.init_app(app)
