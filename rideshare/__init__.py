"""The ride-share job service: a Flask API that hands slow work to Celery workers."""

from collections.abc import Mapping
from typing import Any

from dotenv import load_dotenv
from flask import Flask

from jobqueue import InvalidJobData, QueueUnavailable
from rideshare import redis_memory, telemetry
from rideshare.celery_app import celery_init_app
from rideshare.config import settings_from_env
from rideshare.db import Database, load_models
from rideshare.logs import configure_logging


def create_app(test_config: Mapping[str, Any] | None = None, *, worker: bool = False) -> Flask:
    """Build the app: defaults, then the environment (and .env), then test_config.

    worker=True builds only what a Celery worker needs (settings, logs, SQL, the job
    engine): no API, CLI, OpenAPI or rate limits, so a worker imports none of them.
    """
    load_dotenv(override=False)
    app = Flask(__name__)
    app.config.update(
        API_TITLE="Rideshare jobs API",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    app.config.update(settings_from_env())
    if test_config:
        app.config.update(test_config)
    configure_logging()

    Database().init_app(app)
    load_models()
    celery_init_app(app)
    redis_memory.init_app(app)
    telemetry.init_app(app, worker=worker)
    if worker:
        return app

    from flask_smorest import Api

    from rideshare import cli, errors, json_body, ratelimit

    ratelimit.init_app(app)
    cli.init_app(app)
    api = Api(app)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    from rideshare import health, metrics
    from rideshare.admin import dashboard, schedule_pages  # noqa: F401 - schedule_pages' routes are on dashboard.bp
    from rideshare.admin.api import blp as admin_blp
    from rideshare.admin.schedules import blp as schedules_blp
    from rideshare.jobs.api import blp as jobs_blp
    from rideshare.mail.api import blp as mail_blp
    from rideshare.payments.api import blp as payments_blp
    from rideshare.rides.api import blp as rides_blp
    from rideshare.validation import IdField, Money

    # A number or a string: each one's metadata states both forms (oneOf).
    api.register_field(Money, None, None)
    api.register_field(IdField, None, None)
    for blueprint in (rides_blp, payments_blp, mail_blp, jobs_blp, admin_blp, schedules_blp):
        api.register_blueprint(blueprint)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(dashboard.bp)

    errors.init_app(app, api)
    json_body.init_app(app)

    @app.errorhandler(QueueUnavailable)
    def queue_unavailable(exc: QueueUnavailable) -> tuple[dict[str, Any], int, dict[str, str]]:
        body = {
            "code": 503,
            "status": "Service Unavailable",
            "message": "The job queue is unavailable; nothing was queued. Try again shortly.",
        }
        return body, 503, {"Retry-After": "5"}

    @app.errorhandler(InvalidJobData)
    def invalid_job_data(exc: InvalidJobData) -> tuple[dict[str, Any], int]:
        # A request its own schema took but whose job its queue's schema refuses: a 422 naming
        # the job's fields, nothing queued (a route that knows better answers for itself).
        body = {
            "code": 422,
            "status": "Unprocessable Entity",
            "message": "The job this request makes is not valid; nothing was queued.",
            "errors": {"json": exc.errors},
        }
        return body, 422

    return app
