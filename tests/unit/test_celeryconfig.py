"""celeryconfig: queues, routes, serialization, delivery guarantees and the Redis URL."""

import importlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from celery import Celery
from celery.exceptions import QueueNotFound

import celeryconfig
from celeryconfig import redis_url_from_env
from rideshare.celery_app import task_queues_and_routes
from rideshare.queues import POLICIES

QUEUES = {"email", "analytics", "payment"}


@pytest.fixture
def celery() -> Iterator[Celery]:
    """A Celery app configured as the app does it (celeryconfig, then queues from the policies); never connects."""
    app = Celery("unit", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(task_queues_and_routes(POLICIES, "redis://127.0.0.1:6379/0"))
    try:
        yield app
    finally:
        app.close()


def test_exactly_three_queues_each_with_its_own_direct_exchange(celery):
    queues = celery.conf.task_queues
    assert {q.name for q in queues} == QUEUES
    assert len(queues) == 3
    for queue in queues:
        assert queue.exchange.name == queue.name
        assert queue.exchange.type == "direct"
        assert queue.routing_key == queue.name
        assert queue.queue_arguments is None


def test_payment_queue_is_a_quorum_queue_on_rabbitmq():
    queues = task_queues_and_routes(POLICIES, "amqp://guest@127.0.0.1//")["task_queues"]
    assert all(q.queue_arguments == {"x-queue-type": "quorum"} for q in queues)


def test_queue_names_are_written_once_in_the_policies():
    assert {policy.name for policy in POLICIES} == QUEUES
    assert not hasattr(celeryconfig, "QUEUES")


def test_missing_queues_are_not_created():
    assert celeryconfig.task_create_missing_queues is False


def test_routes_send_each_task_to_its_queue(celery):
    assert celery.conf.task_routes == {
        "email.send": {"queue": "email", "routing_key": "email"},
        "analytics.record": {"queue": "analytics", "routing_key": "analytics"},
        "payment.charge": {"queue": "payment", "routing_key": "payment"},
    }


@pytest.mark.parametrize(
    ("task", "queue"),
    [("email.send", "email"), ("analytics.record", "analytics"), ("payment.charge", "payment")],
)
def test_celery_router_routes_the_real_task_names(celery, task, queue):
    route = celery.amqp.router.route({}, task)
    assert route["queue"].name == queue
    assert route["routing_key"] == queue


def test_router_refuses_an_undeclared_queue(celery):
    assert set(celery.amqp.queues) == QUEUES
    with pytest.raises(QueueNotFound):
        celery.amqp.router.route({"queue": "emial"}, "email.send")


def test_json_only():
    assert celeryconfig.accept_content == ["json"]
    assert celeryconfig.result_accept_content == ["json"]
    assert celeryconfig.task_serializer == "json"
    assert celeryconfig.result_serializer == "json"


def test_loaded_app_uses_json_only(celery):
    assert celery.conf.accept_content == ["json"]
    assert celery.conf.task_serializer == "json"
    assert celery.conf.task_create_missing_queues is False


def test_task_events_are_sent_from_the_start_unless_turned_off(monkeypatch):
    # On by default, so Flower sees every job that runs while it watches; no sent events.
    assert celeryconfig.worker_send_task_events is True
    assert celeryconfig.task_send_sent_event is False
    monkeypatch.setenv("CELERY_TASK_EVENTS", "false")
    try:
        assert importlib.reload(celeryconfig).worker_send_task_events is False
    finally:
        monkeypatch.delenv("CELERY_TASK_EVENTS")
        importlib.reload(celeryconfig)


def test_acks_late_and_redelivery_on_worker_loss():
    assert celeryconfig.task_acks_late is True
    assert celeryconfig.task_reject_on_worker_lost is True


def test_no_result_backend():
    assert celeryconfig.task_ignore_result is True
    assert celeryconfig.result_backend is None


def test_the_broker_transport_is_stock():
    # Jobs never travel through the broker: no transport options of ours.
    assert not hasattr(celeryconfig, "broker_transport_options")


def test_the_worker_imports_every_task_module():
    assert set(celeryconfig.imports) == {"tasks.email", "tasks.analytics", "tasks.payment"}


# --- redis_url_from_env ------------------------------------------------------


def test_redis_url_defaults_to_local_db_0():
    assert redis_url_from_env({}) == "redis://127.0.0.1:6379/0"


def test_redis_url_from_host_port_db():
    env = {"REDIS_HOST": "cache.internal", "REDIS_PORT": "6380", "REDIS_DB": "3"}
    assert redis_url_from_env(env) == "redis://cache.internal:6380/3"


def test_redis_url_quotes_the_password():
    env = {"REDIS_HOST": "cache", "REDIS_PORT": "6379", "REDIS_DB": "2", "REDIS_PASSWORD": "p@ss/w:rd"}
    url = redis_url_from_env(env)
    assert url == "redis://:p%40ss%2Fw%3Ard@cache:6379/2"
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == ("cache", 6379, "/2")


def test_redis_url_parses_back_to_the_same_password():
    import redis

    password = "p@ss/w:rd %"
    kwargs = redis.connection.parse_url(redis_url_from_env({"REDIS_PASSWORD": password}))
    assert kwargs["password"] == password
    assert kwargs["host"] == "127.0.0.1"


def test_empty_password_adds_no_auth():
    assert "@" not in redis_url_from_env({"REDIS_PASSWORD": ""})


def test_redis_url_overrides_the_parts():
    env = {"REDIS_URL": "rediss://:secret@redis.example:6390/5", "REDIS_HOST": "ignored", "REDIS_PASSWORD": "x"}
    assert redis_url_from_env(env) == "rediss://:secret@redis.example:6390/5"


def test_an_empty_redis_url_falls_back_to_the_parts():
    assert redis_url_from_env({"REDIS_URL": "", "REDIS_HOST": "h"}) == "redis://h:6379/0"
