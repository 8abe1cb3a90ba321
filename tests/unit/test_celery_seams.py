"""The Celery and kombu names the engine's worker uses exist in the installed releases, with the
signatures it calls: a release that renames them fails here, not in production."""

import inspect


def test_the_worker_seams_exist_in_the_installed_celery_and_kombu():
    """The Celery and kombu names the fetcher uses, all public: a release that drops one fails here."""
    from celery.worker.consumer import Consumer
    from celery.worker.request import Request
    from kombu.asynchronous.hub import Hub

    import jobqueue.worker  # noqa: F401 - its import-time version check passes

    assert callable(Hub.call_soon) and callable(Hub.add_reader)
    assert hasattr(Consumer, "update_strategies")
    assert {"on_ack", "on_reject"} <= set(inspect.signature(Request).parameters)
