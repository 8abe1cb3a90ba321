"""The Celery app: ``celery -A tasks worker -Q payment``.

The Flask app (and with it the Celery app) is built on first use of
``tasks.app``, so importing a task module never builds a second app. It is the
worker's build of the app (no API, CLI or OpenAPI), and each task imports its
domain service when it first runs, so a worker loads only what its queues need
(the Stripe SDK only where payments run).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from rideshare import create_app

        celery = create_app(worker=True).extensions["celery"]
        globals()["app"] = celery
        return celery
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
