"""Application settings: defaults, then the environment."""

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from celeryconfig import redis_url_from_env
from jobqueue.limits import InvalidLimits, Limits

# A queue's flow-control variables (jobqueue.limits.Limits.from_env reads them per queue).
FLOW_LIMIT_VARIABLE = re.compile(r"[A-Z][A-Z0-9]*_(RATE_LIMIT|CONCURRENCY_LIMIT|GROUP_CONCURRENCY|GROUP_RATE_LIMIT)")


class SettingsError(ValueError):
    """Settings a process cannot start with; the message names each variable and what is wrong."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("invalid settings: " + "; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = dict(errors)


def _int(environ: dict[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    return int(raw) if raw.strip() else default


def settings_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Flask config keys read from the environment, with embedded defaults."""
    env = dict(os.environ if environ is None else environ)
    var_dir = Path(env.get("RIDESHARE_VAR_DIR", "var")).resolve()
    return {
        "SECRET_KEY": env.get("SECRET_KEY", "dev-only-insecure-secret-key-change-me-in-production"),
        "TOKEN_TTL_SECONDS": _int(env, "TOKEN_TTL_SECONDS", 3600),
        "DATABASE_URL": env.get("DATABASE_URL") or f"sqlite:///{var_dir / 'rideshare.sqlite3'}",
        # SQL connections per process. A worker on a threads or gevent pool grows it to
        # its concurrency (rideshare.celery_app), so no job thread waits for a connection.
        "DB_POOL_SIZE": _int(env, "DB_POOL_SIZE", 5),
        "DB_MAX_OVERFLOW": _int(env, "DB_MAX_OVERFLOW", 10),
        "REDIS_URL": redis_url_from_env(env),
        # The broker; defaults to the job store's Redis (see celeryconfig.broker_url).
        "BROKER_URL": env.get("BROKER_URL", ""),
        # BullMQ-compatible job defaults (milliseconds, as in the original design).
        "JOB_RETRY_ATTEMPTS": _int(env, "JOB_RETRY_ATTEMPTS", 3),
        "JOB_RETRY_DELAY": _int(env, "JOB_RETRY_DELAY", 5000),
        "JOB_TIMEOUT": _int(env, "JOB_TIMEOUT", 30000),
        # Finished jobs kept per queue, as in the original design (removeOnComplete: 100,
        # removeOnFail: 50); a job's own remove_on_complete/remove_on_fail wins.
        "JOB_KEEP_COMPLETED": _int(env, "JOB_KEEP_COMPLETED", 100),
        "JOB_KEEP_FAILED": _int(env, "JOB_KEEP_FAILED", 50),
        # A job whose worker died is delivered again once its lease (timeout + 7 s) runs
        # out; after this many such stalls it fails as a poison job.
        "JOB_MAX_STALLS": _int(env, "JOB_MAX_STALLS", 2),
        # What the store keeps besides each job (jobqueue.scripts.Features; bench/features.py
        # measures each): the events stream's length (0: no events, so no live streams), the
        # per-minute metric buckets (the dashboard's history) and the search indexes.
        "JOB_EVENTS_MAXLEN": _int(env, "JOB_EVENTS_MAXLEN", 10_000),
        "JOB_METRIC_BUCKETS": env.get("JOB_METRIC_BUCKETS", "true").lower() not in ("0", "false", "no"),
        "JOB_SEARCH_INDEX": env.get("JOB_SEARCH_INDEX", "true").lower() not in ("0", "false", "no"),
        # A job staged in the outbox with its SQL row is published by its request right
        # after the commit; one still there this long after (its process died) is
        # published by a worker's relay, which runs every 2 s.
        "JOB_OUTBOX_SETTLE_MS": _int(env, "JOB_OUTBOX_SETTLE_MS", 2_000),
        # Fernet keys for sensitive job data, newest first (rotate by prepending); empty:
        # derived from SECRET_KEY.
        "JOB_DATA_KEYS": env.get("JOB_DATA_KEYS", ""),
        "JOB_KEY_PREFIX": env.get("JOB_KEY_PREFIX", "rideshare"),
        # Where schedules fire: 'worker' (each worker runs a scheduler beside its housekeeping;
        # any number fire each tick once) or 'off' (only `flask jobs scheduler` processes do).
        "JOB_SCHEDULER": env.get("JOB_SCHEDULER", "worker").strip().lower() or "worker",
        # The shipped schedules (rideshare.jobs.shipped): created where a scheduler starts when
        # absent, never over an operator's edit, pause or removal. false: none is created.
        "SHIPPED_SCHEDULES": env.get("SHIPPED_SCHEDULES", "true").lower() not in ("0", "false", "no", "off"),
        # The nightly driver-payout summary: when (5-field cron) and in which time zone.
        "PAYOUT_SUMMARY_CRON": env.get("PAYOUT_SUMMARY_CRON") or "0 3 * * *",
        "PAYOUT_SUMMARY_TZ": env.get("PAYOUT_SUMMARY_TZ") or "UTC",
        # The sweep that expires rides left requested for RIDE_EXPIRY_MINUTES.
        "RIDE_EXPIRY_CRON": env.get("RIDE_EXPIRY_CRON") or "*/5 * * * *",
        "RIDE_EXPIRY_TZ": env.get("RIDE_EXPIRY_TZ") or "UTC",
        "RIDE_EXPIRY_MINUTES": max(1, _int(env, "RIDE_EXPIRY_MINUTES", 30)),
        # The sweep that settles payments left pending or processing for PAYMENT_RECHECK_AFTER_MINUTES.
        "PAYMENT_RECHECK_CRON": env.get("PAYMENT_RECHECK_CRON") or "*/5 * * * *",
        "PAYMENT_RECHECK_TZ": env.get("PAYMENT_RECHECK_TZ") or "UTC",
        "PAYMENT_RECHECK_AFTER_MINUTES": max(1, _int(env, "PAYMENT_RECHECK_AFTER_MINUTES", 15)),
        # Redis must not evict (README, "Redis memory"): any maxmemory-policy but noeviction
        # is an ERROR at start-up and fails /readyz, unless this accepts the risk.
        "REDIS_ALLOW_EVICTION": env.get("REDIS_ALLOW_EVICTION", "false").lower() in ("1", "true", "yes"),
        # New jobs get 503 once Redis's used_memory is past this share of maxmemory; the
        # rest is kept for workers to move and finish the jobs already accepted.
        "JOB_STORE_MAX_MEMORY_SHARE": float(env.get("JOB_STORE_MAX_MEMORY_SHARE") or 0.9),
        "SMTP_HOST": env.get("SMTP_HOST", "127.0.0.1"),
        "SMTP_PORT": _int(env, "SMTP_PORT", 1025),
        "SMTP_USER": env.get("SMTP_USER", ""),
        "SMTP_PASSWORD": env.get("SMTP_PASSWORD", ""),
        "SMTP_STARTTLS": env.get("SMTP_STARTTLS", "false").lower() in ("1", "true", "yes"),
        "SMTP_TIMEOUT": _int(env, "SMTP_TIMEOUT", 10),
        # After a 421 or a 4xx rate-limit reply, the email queue takes no job for this long (ms).
        "SMTP_BACK_PRESSURE_MS": max(1, _int(env, "SMTP_BACK_PRESSURE_MS", 30_000)),
        # Messages sent over one SMTP connection before it is closed; 1: a connection per message.
        "SMTP_MAX_MESSAGES_PER_CONNECTION": max(1, _int(env, "SMTP_MAX_MESSAGES_PER_CONNECTION", 100)),
        "MAIL_FROM": env.get("MAIL_FROM", "Rideshare <no-reply@rideshare.local>"),
        "STRIPE_API_KEY": env.get("STRIPE_API_KEY", "sk_test_localstripe"),
        "STRIPE_API_BASE": env.get("STRIPE_API_BASE", "http://127.0.0.1:8420"),
        "STRIPE_TIMEOUT": _int(env, "STRIPE_TIMEOUT", 20),
        "ALERT_WEBHOOK_URL": env.get("ALERT_WEBHOOK_URL", ""),
        # When set, GET /metrics wants "Authorization: Bearer <METRICS_TOKEN>".
        "METRICS_TOKEN": env.get("METRICS_TOKEN", ""),
        # Set true behind HTTPS so the dashboard's session cookie is never sent in clear.
        "SESSION_COOKIE_SECURE": env.get("SESSION_COOKIE_SECURE", "false").lower() in ("1", "true", "yes"),
        # Job-creating routes, per user and per IP (Flask-Limiter syntax).
        "RATE_LIMIT_JOBS": env.get("RATE_LIMIT_JOBS", "120/minute"),
        "RATELIMIT_ENABLED": env.get("RATELIMIT_ENABLED", "true").lower() not in ("0", "false", "no"),
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 64 * 1024),
        # Server-Sent Events (GET /jobs/<id>/events, /admin/events) each hold a server thread
        # while open: at most this many per process (one more gets 503), each at most this long.
        "EVENT_STREAMS_MAX": max(1, _int(env, "EVENT_STREAMS_MAX", 4)),
        "EVENT_STREAM_MAX_SECONDS": _int(env, "EVENT_STREAM_MAX_SECONDS", 300),
        "VAR_DIR": str(var_dir),
        # Flow control per queue: PAYMENT_RATE_LIMIT=25/s, PAYMENT_CONCURRENCY_LIMIT=20,
        # PAYMENT_GROUP_CONCURRENCY, PAYMENT_GROUP_RATE_LIMIT (none unless set). Each process
        # seeds them into the job store at start, unless an operator set the queue's limits
        # at run time (rideshare.celery_app; flow_limits checks them).
        "FLOW_LIMITS_ENV": {name: value for name, value in env.items() if FLOW_LIMIT_VARIABLE.fullmatch(name)},
    }


def flow_limits(config: Mapping[str, Any], queues: Iterable[str]) -> dict[str, Limits]:
    """Each queue's limits from FLOW_LIMITS_ENV, for the queues that have a variable set (none:
    `PAYMENT_RATE_LIMIT=none`); SettingsError naming every bad variable.

    A queue with none of its variables set is left out, so a process started without them (a
    CLI command, a shell) leaves the limits the stack's processes seeded as they are."""
    environ = config.get("FLOW_LIMITS_ENV") or {}
    found: dict[str, Limits] = {}
    errors: dict[str, str] = {}
    for queue in queues:
        if not any(FLOW_LIMIT_VARIABLE.fullmatch(name) and name.startswith(f"{queue.upper()}_") for name in environ):
            continue
        try:
            found[queue] = Limits.from_env(queue, environ)
        except InvalidLimits as exc:
            errors |= {name: f"{message} (got {environ.get(name)!r})" for name, message in exc.errors.items()}
    if errors:
        raise SettingsError(errors)
    return found
