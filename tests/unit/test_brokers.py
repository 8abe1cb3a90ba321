"""The public kombu names jobqueue.brokers subclasses exist in the installed kombu, with the
signatures it overrides: a kombu release that renames them fails here, not in production."""

import inspect

import kombu
import kombu.transport.redis as kombu_redis
from kombu.connection import Connection

from jobqueue import brokers


def test_the_overridden_kombu_names_exist():
    for cls, name in [
        (kombu_redis.Channel, "queue_declare"),
        (kombu_redis.Channel, "queue_bind"),
        (kombu_redis.QoS, "restore_visible"),
        (kombu_redis.Transport, "Channel"),
        (kombu_redis.Channel, "QoS"),
    ]:
        assert hasattr(cls, name), f"kombu {kombu.__version__}: {cls.__name__}.{name} is gone"
    assert "num" in inspect.signature(kombu_redis.QoS.restore_visible).parameters


def test_the_transport_is_chosen_by_setting():
    conn = Connection("redis://127.0.0.1:1/0", transport=brokers.TRANSPORT)
    assert conn.transport_cls == brokers.TRANSPORT
    assert isinstance(conn.transport, brokers.RedisTransport)
    assert issubclass(brokers.RedisTransport.Channel.QoS, kombu_redis.QoS)


def test_the_worker_seams_exist_in_the_installed_celery_and_kombu():
    """The Celery and kombu names the fetcher uses, all public: a release that drops one fails here."""
    from celery.worker.consumer import Consumer
    from celery.worker.request import Request
    from kombu.asynchronous.hub import Hub

    import jobqueue.worker  # noqa: F401 - its import-time version check passes

    assert callable(Hub.call_soon) and callable(Hub.add_reader)
    assert hasattr(Consumer, "update_strategies")
    assert {"on_ack", "on_reject"} <= set(inspect.signature(Request).parameters)
