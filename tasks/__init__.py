"""The Celery app: ``celery -A tasks worker -Q payment``.

The Flask app (and with it the Celery app) is built on first use of
``tasks.app``, so importing a task module never builds a second app.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from rideshare import create_app

        celery = create_app().extensions["celery"]
        globals()["app"] = celery
        return celery
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
