"""GET /healthz (the process is up) and GET /readyz (broker and database reachable, Redis not evicting)."""

from typing import Any

from flask import Blueprint, current_app
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from rideshare import redis_memory
from rideshare.db import get_db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    checks: dict[str, str] = {}
    try:
        current_app.extensions["jobs"].store.redis.ping()
        # An evicting Redis answers, but can drop accepted jobs: not ready, and why.
        checks["redis"] = redis_memory.readiness(current_app) or "ok"
    except RedisError as exc:
        checks["redis"] = f"unreachable: {exc.__class__.__name__}"
    try:
        with get_db().session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {exc.__class__.__name__}"
    ready = all(v == "ok" for v in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503
