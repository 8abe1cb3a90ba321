"""The Celery and kombu names jobqueue.celery_seams uses exist in the installed releases, with the
signatures it calls: a release that renames them fails here, not in production."""

import inspect

import pytest


def test_the_worker_seams_exist_in_the_installed_celery_and_kombu():
    from celery import Celery
    from celery.worker.consumer import Consumer
    from celery.worker.request import Request
    from celery.worker.strategy import default as default_strategy
    from kombu.asynchronous.hub import Hub
    from kombu.message import Message

    from jobqueue import celery_seams  # its import-time version check passes

    assert callable(Hub.call_soon)
    assert hasattr(Consumer, "update_strategies")
    # The strategy's handler takes (message, body, ack, reject, callbacks), as celery_seams calls it.
    assert list(inspect.signature(default_strategy).parameters)[:2] == ["task", "app"]
    assert {"on_ack", "on_reject"} <= set(inspect.signature(Request).parameters)
    assert {"body", "headers", "properties", "delivery_info"} <= set(inspect.signature(Message).parameters)
    # The message builder works on a real app's amqp and sets the job id as the task id.
    app = Celery("seams", set_as_current=False)
    message = celery_seams.TaskMessages(app).build(
        "q.run", "q", "job-1", {"id": "job-1"}, time_limit=35.0, retries=1, priority=0
    )
    assert message.headers["id"] == "job-1" and message.headers["task"] == "q.run"
    assert message.headers["timelimit"] == [35.0, None] and message.headers["retries"] == 1
    assert message.payload[0] == [{"id": "job-1"}]
    app.close()
    # Cancel's terminate: the worker's running requests, and Request.terminate(pool, signal).
    from celery.worker import state

    assert celery_seams.running_requests() == list(state.active_requests) == []  # a (weak) set of requests
    assert list(inspect.signature(Request.terminate).parameters)[:3] == ["self", "pool", "signal"]
    assert {"sender", "request", "terminated"} <= set(
        inspect.signature(__import__("jobqueue.task", fromlist=["end_terminated"]).end_terminated).parameters
    )


def test_an_unsupported_release_is_refused_at_import(monkeypatch):
    import importlib
    import sys

    import celery

    monkeypatch.setattr(celery, "__version__", "6.0.0")
    monkeypatch.delitem(sys.modules, "jobqueue.celery_seams", raising=False)
    with pytest.raises(ImportError, match="celery 5.7 to 6"):
        importlib.import_module("jobqueue.celery_seams")
    monkeypatch.undo()
    sys.modules.pop("jobqueue.celery_seams", None)
    importlib.import_module("jobqueue.celery_seams")
