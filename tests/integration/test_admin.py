"""The admin API against a real worker: retry with corrected data, pause/resume, retention, audit."""

import secrets
import time

import pytest

from rideshare.db import get_db
from rideshare.jobs import add_email_job, get_job, get_job_counts
from rideshare.payments.models import Payment
from tests.integration.test_payments import create_ride, intents_for, post_payment

pytestmark = pytest.mark.integration


def mail(**extra) -> dict:
    return {"to": f"a-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello", **extra}


def test_retry_with_corrected_data_turns_a_failed_payment_into_a_succeeded_one(app, client, stack, auth_headers):
    user, admin = auth_headers("42"), auth_headers("1", "admin")
    accepted = post_payment(client, user, create_ride(client, user), paymentMethod="pm_card_chargeCustomerFail")
    job = stack.wait_for_job(accepted["jobId"])
    assert job.state == "failed"

    bad = client.post(
        f"/admin/jobs/{job.id}/retry", json={"data": {"paymentId": "x", "paymentMethod": "4242"}}, headers=admin
    )
    assert bad.status_code == 422
    assert set(bad.json["errors"]["json"]["data"]) == {"paymentId", "paymentMethod"}
    assert get_job(job.id).state == "failed"

    response = client.post(
        f"/admin/jobs/{job.id}/retry",
        json={"data": {"paymentId": accepted["paymentId"], "paymentMethod": "pm_card_visa"}},
        headers=admin,
    )
    assert response.status_code == 200, response.json
    assert response.json["data"]["paymentMethod"] == "***"
    job = stack.wait_for_job(job.id, states=("completed",))
    assert job.attempts == 2
    with get_db().session() as session:
        payment = session.get(Payment, accepted["paymentId"])
    assert (payment.status, payment.payment_method, payment.charge_round) == ("succeeded", "pm_card_visa", 1)
    statuses = sorted(pi.status for pi in intents_for(stack, payment.id))
    assert statuses == ["requires_payment_method", "succeeded"]

    again = client.post(f"/admin/jobs/{job.id}/retry", headers=admin)
    assert again.status_code == 409

    # The new payment method is encrypted at rest: no plaintext in any Redis value.
    store = app.extensions["jobs"].store
    assert "pm_card_visa" not in store.redis.hget(store.keys.job(job.id, job.queue), "data")
    assert store.get(job.id).data["paymentMethod"] == "pm_card_visa"
    # Every key of the payment queue (the session's other queues hold other tests' jobs, whose
    # data may be anything: the API fuzzer's email bodies among them).
    for key in store.redis.scan_iter(match=f"{store.keys.tag('payment')}*", count=1000):
        kind = store.redis.type(key)
        values = {
            "hash": lambda k: list(store.redis.hgetall(k).values()),
            "list": lambda k: store.redis.lrange(k, 0, -1),
            "string": lambda k: [store.redis.get(k)],
        }.get(kind, lambda k: [])(key)
        assert not any("pm_card_visa" in str(v) for v in values), key


def test_job_detail_masks_data_and_shows_every_attempt(app, client, stack, auth_headers):
    data = mail()
    stack.services.smtp.handler.plan(data["to"], "451 later")
    job = stack.wait_for_job(add_email_job(data, backoff={"type": "fixed", "delay": 100}).id)
    detail = client.get(f"/admin/jobs/{job.id}", headers=auth_headers("1", "admin")).json

    assert detail["data"]["to"].startswith(data["to"][0] + "***@")
    assert detail["data"]["to"] != data["to"]
    assert [a["attempt"] for a in detail["attemptLog"]] == [1, 2]
    assert detail["attemptLog"][0]["error"].startswith("SMTP 451")
    assert "TransientJobError" in detail["attemptLog"][0]["traceback"]
    assert detail["opts"]["backoff"] == {"type": "fixed", "delay": 100}
    assert detail["state"] == "completed"


def test_pause_holds_jobs_and_resume_releases_them(app, client, stack, auth_headers):
    admin = auth_headers("1", "admin")
    assert client.post("/admin/queues/email/pause", headers=admin).json["paused"] is True
    try:
        time.sleep(2.5)  # every worker polls the pause flag each second
        job = add_email_job(mail())
        time.sleep(3)
        assert get_job(job.id).state == "waiting"
        counts = get_job_counts("email")
        assert counts["paused"] >= 1 and counts["waiting"] == 0
        overview = client.get("/admin/queues", headers=admin).json["queues"]
        assert [q["paused"] for q in overview if q["name"] == "email"] == [True]
    finally:
        resumed = client.post("/admin/queues/email/resume", headers=admin)
    assert resumed.json["paused"] is False
    assert stack.wait_for_job(job.id, timeout=15).state == "completed"


def test_retention_trims_completed_jobs_to_exactly_n(app, stack):
    jobs = [add_email_job(mail(), remove_on_complete=3) for _ in range(7)]
    for job in jobs:
        deadline = time.monotonic() + 20
        while (found := get_job(job.id)) is not None and found.state != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    time.sleep(0.3)
    assert get_job_counts("email")["completed"] == 3
    kept = [job.id for job in jobs if get_job(job.id) is not None]
    assert len(kept) == 3


def test_remove_on_fail_true_removes_the_failed_job(app, stack):
    data = mail()
    stack.services.smtp.handler.plan(data["to"], "550 no")
    job = add_email_job(data, remove_on_fail=True)
    deadline = time.monotonic() + 15
    while get_job(job.id) is not None:
        assert time.monotonic() < deadline, "the failed job was kept"
        time.sleep(0.05)
    assert stack.services.smtp.handler.messages_to(data["to"]) == []


def test_queue_overview_lists_workers_throughput_and_timing(app, client, stack, auth_headers):
    stack.wait_for_job(add_email_job(mail()).id)
    queues = {q["name"]: q for q in client.get("/admin/queues", headers=auth_headers("1", "admin")).json["queues"]}

    assert set(queues) == {"email", "analytics", "payment"}
    email = queues["email"]
    assert email["workers"] and email["workers"][0]["name"].startswith("test-")
    assert email["completedLastMinute"] >= 1 and email["completedLastHour"] >= email["completedLastMinute"]
    assert email["meanProcessingMs"] > 0 and email["p95ProcessingMs"] >= email["meanProcessingMs"] * 0.5
    assert set(email["counts"]) == {
        "waiting",
        "grouped",
        "delayed",
        "active",
        "completed",
        "failed",
        "cancelled",
        "expired",
        "paused",
    }


def test_list_search_delete_clean_and_audit(app, client, stack, auth_headers):
    admin = auth_headers("1", "admin")
    data = mail()
    stack.services.smtp.handler.plan(data["to"], "550 no")
    failed = stack.wait_for_job(add_email_job(data).id)

    page = client.get("/admin/queues/email/jobs?state=failed&limit=1", headers=admin).json
    assert [j["id"] for j in page["jobs"]] == [failed.id]
    found = client.get(f"/admin/queues/email/jobs?field=to&value={data['to']}", headers=admin).json
    assert [j["id"] for j in found["jobs"]] == [failed.id]
    by_id = client.get(f"/admin/queues/email/jobs?jobId={failed.id}", headers=admin).json
    assert [j["id"] for j in by_id["jobs"]] == [failed.id]

    assert client.delete(f"/admin/jobs/{failed.id}", headers=admin).status_code == 204
    assert client.get(f"/admin/jobs/{failed.id}", headers=admin).status_code == 404

    cleaned = client.post(
        "/admin/queues/email/clean", json={"state": "completed", "graceMs": 0, "limit": 1000}, headers=admin
    )
    assert cleaned.status_code == 200
    assert get_job_counts("email")["completed"] == 0
    assert client.post("/admin/queues/email/clean", json={"state": "active"}, headers=admin).status_code == 422

    entries = client.get("/admin/audit?limit=5", headers=admin).json["entries"]
    assert [e["action"] for e in entries[:2]] == ["queue.clean", "job.delete"]
    assert entries[1]["target"] == failed.id and entries[1]["actor"] == "user:1"


def test_retry_failed_retries_every_failed_job(app, client, stack, auth_headers):
    admin = auth_headers("1", "admin")
    datas = [mail(), mail()]
    for data in datas:
        stack.services.smtp.handler.plan(data["to"], "550 no")
    jobs = [stack.wait_for_job(add_email_job(d).id) for d in datas]
    assert {j.state for j in jobs} == {"failed"}

    response = client.post("/admin/queues/email/retry-failed", headers=admin)
    assert response.status_code == 200
    assert response.json["retried"] >= 2
    for job in jobs:
        assert stack.wait_for_job(job.id, states=("completed",)).attempts == 2


def test_metrics_count_jobs_per_queue(app, client, stack):
    before = client.get("/metrics").data.decode()
    stack.wait_for_job(add_email_job(mail()).id)
    text = client.get("/metrics").data.decode()

    def value(body: str, name: str) -> float:
        line = next(row for row in body.splitlines() if row.startswith(name))
        return float(line.rsplit(" ", 1)[1])

    added = 'rideshare_jobs_added_total{queue="email"}'
    assert value(text, added) == value(before, added) + 1
    assert value(text, 'rideshare_jobs_completed_total{queue="email"}') >= 1
    assert 'rideshare_job_processing_seconds_bucket{le="+Inf",queue="email"}' in text
    assert 'rideshare_queue_delayed_jobs{queue="payment"}' in text
    assert 'rideshare_queue_jobs{queue="email",state="cancelled"}' in text
    assert 'rideshare_jobs_cancelled_total{queue="email"}' in text
    assert 'rideshare_queue_oldest_waiting_seconds{queue="email"}' in text


ADMIN_ROUTES = [
    ("get", "/admin/queues"),
    ("get", "/admin/queues/email"),
    ("get", "/admin/queues/email/jobs"),
    ("post", "/admin/queues/email/retry-failed"),
    ("post", "/admin/queues/email/clean"),
    ("post", "/admin/queues/email/pause"),
    ("post", "/admin/queues/email/resume"),
    ("get", "/admin/jobs/some-job"),
    ("delete", "/admin/jobs/some-job"),
    ("post", "/admin/jobs/some-job/retry"),
    ("get", "/admin/audit"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_every_admin_route_wants_an_admin(client, auth_headers, method, path):
    call = getattr(client, method)
    anonymous = call(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert call(path, headers=auth_headers("42", "user")).status_code == 403
    assert call(path, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
