"""celeryconfig: queues, routes, serialization, delivery guarantees and the Redis URL."""

import importlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from celery import Celery
from celery.exceptions import QueueNotFound

import celeryconfig
from celeryconfig import redis_url_from_env

QUEUES = {"email", "analytics", "payment"}


@pytest.fixture
def celery() -> Iterator[Celery]:
    """A Celery app configured from celeryconfig; it never connects."""
    app = Celery("unit", set_as_current=False)
    app.config_from_object("celeryconfig")
    try:
        yield app
    finally:
        app.close()


def test_exactly_three_queues_each_with_its_own_direct_exchange():
    assert {q.name for q in celeryconfig.task_queues} == QUEUES
    assert len(celeryconfig.task_queues) == 3
    for queue in celeryconfig.task_queues:
        assert queue.exchange.name == queue.name
        assert queue.exchange.type == "direct"
        assert queue.routing_key == queue.name


def test_missing_queues_are_not_created():
    assert celeryconfig.task_create_missing_queues is False


def test_routes_send_each_task_family_to_its_queue():
    assert celeryconfig.task_routes == {
        "email.*": {"queue": "email", "routing_key": "email"},
        "analytics.*": {"queue": "analytics", "routing_key": "analytics"},
        "payment.*": {"queue": "payment", "routing_key": "payment"},
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


def test_task_events_wait_for_flower_unless_asked_for(monkeypatch):
    # Off by default (Flower turns task events on in running workers), sent events too.
    assert celeryconfig.worker_send_task_events is False
    assert celeryconfig.task_send_sent_event is False
    monkeypatch.setenv("CELERY_TASK_EVENTS", "true")
    monkeypatch.setenv("CELERY_SENT_EVENTS", "true")
    try:
        reloaded = importlib.reload(celeryconfig)
        assert reloaded.worker_send_task_events is True
        assert reloaded.task_send_sent_event is True
    finally:
        monkeypatch.delenv("CELERY_TASK_EVENTS")
        monkeypatch.delenv("CELERY_SENT_EVENTS")
        importlib.reload(celeryconfig)


def test_acks_late_and_redelivery_on_worker_loss():
    assert celeryconfig.task_acks_late is True
    assert celeryconfig.task_reject_on_worker_lost is True


def test_no_result_backend():
    assert celeryconfig.task_ignore_result is True
    assert celeryconfig.result_backend is None


def test_priority_queues_on_redis():
    options = celeryconfig.broker_transport_options
    assert options["queue_order_strategy"] == "priority"
    assert options["priority_steps"] == list(range(10))
    assert options["sep"] == ":"
    # Recovery is the job store's (leases, lost-message sweep), not kombu's unacked records.
    assert options["ack_emulation"] is False
    assert "visibility_timeout" not in options


def test_the_worker_imports_every_task_module():
    assert set(celeryconfig.imports) == {"tasks.email", "tasks.analytics", "tasks.payment", "tasks.dead_letter"}


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
