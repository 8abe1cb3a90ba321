"""Flow control as operators see and change it: the admin API, the environment's seeding, the CLI,
the dashboard's limits panel and /metrics, against a real job store and real workers.

Every test works on a job store of its own (own_queues_env and a key prefix of its own), so the
limits it sets hold back no other test's jobs."""

import os
import secrets
import subprocess
import sys
import time

import pytest

from rideshare.config import SettingsError
from rideshare.jobs import add_email_job, get_queue
from rideshare.jobs.control import audit_entries
from tests.conftest import REPO, app_from_env, close_app, own_app, start_worker, stop, wait_for_jobs

pytestmark = pytest.mark.integration

NO_LIMITS = {"rate": None, "concurrency": None, "group": {"concurrency": 1, "rate": None}}


def mail(tag: str = "lim", **extra) -> dict:
    return {"to": f"{tag}-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello", **extra}


@pytest.fixture
def env(own_queues_env) -> dict[str, str]:
    return {**own_queues_env, "JOB_KEY_PREFIX": f"lim{secrets.token_hex(3)}"}


def newest_audit(count: int = 1) -> list:
    return audit_entries(count, None)


def test_limits_put_then_get_audited_refused_for_viewers_and_bad_fields(env, auth_headers):
    admin, viewer = auth_headers("1", "admin"), auth_headers("9", "viewer")
    with own_app(env) as app:
        client = app.test_client()
        shown = client.get("/admin/queues/payment/limits", headers=viewer)
        assert shown.status_code == 200, shown.json
        assert (shown.json["limits"], shown.json["setBy"], shown.json["limited"]) == (NO_LIMITS, None, False)

        body = {"rate": "25/s", "concurrency": 20, "group": {"concurrency": 2, "rate": {"max": 5, "perMs": 1000}}}
        changed = client.put("/admin/queues/payment/limits", json=body, headers=admin)
        assert changed.status_code == 200, changed.json
        want = {
            "rate": {"max": 25, "perMs": 1000},
            "concurrency": 20,
            "group": {"concurrency": 2, "rate": {"max": 5, "perMs": 1000}},
        }
        read = client.get("/admin/queues/payment/limits", headers=viewer).json
        assert (changed.json["limits"], read["limits"], read["setBy"]) == (want, want, "admin")
        assert read["rateUsed"] == 0 and read["waitingOnLimit"] == 0
        [entry] = newest_audit()
        assert (entry.actor, entry.action, entry.target) == ("user:1", "queue.limits", "payment")
        assert entry.details == {"old": NO_LIMITS, "new": want}

        # A field left out stays; null removes.
        partial = client.put("/admin/queues/payment/limits", json={"concurrency": None}, headers=admin).json
        assert partial["limits"] == {**want, "concurrency": None}
        assert get_queue("email").flow.get().to_dict() == NO_LIMITS  # other queues untouched

        # Refusals change nothing and write no audit entry.
        before = newest_audit()[0].id
        assert client.put("/admin/queues/payment/limits", json={"concurrency": 1}, headers=viewer).status_code == 403
        bad = client.put(
            "/admin/queues/payment/limits",
            json={"rate": "fast", "concurrency": 0, "group": {"concurrency": -1, "rate": "5/s"}, "burst": 3},
            headers=admin,
        )
        assert bad.status_code == 422, bad.json
        errors = bad.json["errors"]["json"]
        assert set(errors) == {"rate", "concurrency", "group", "burst"}, errors
        assert set(errors["group"]) == {"concurrency"} and "25/s" in errors["rate"][0]
        too_slow = client.put("/admin/queues/payment/limits", json={"rate": {"max": 1, "perMs": 0}}, headers=admin)
        assert too_slow.status_code == 422 and "perMs" in str(too_slow.json["errors"]["json"]["rate"])
        missing = client.put("/admin/queues/taxi/limits", json={"concurrency": 1}, headers=admin)
        assert missing.status_code == 404 and client.get("/admin/queues/taxi/limits", headers=viewer).status_code == 404
        assert client.get("/admin/queues/payment/limits", headers=viewer).json["limits"] == partial["limits"]
        assert newest_audit()[0].id == before


def test_group_limits_and_throttle(env, auth_headers):
    admin, viewer = auth_headers("1", "admin"), auth_headers("9", "viewer")
    with own_app(env) as app:
        client = app.test_client()
        url = "/admin/queues/email/groups/ride:7/limits"
        client.put("/admin/queues/email/limits", json={"group": {"concurrency": 2}}, headers=admin)
        assert client.get(url, headers=viewer).json == {
            "queue": "email",
            "group": "ride:7",
            "limits": {"concurrency": None, "rate": None},
            "applies": {"concurrency": 2, "rate": None},
        }
        own = client.put(url, json={"concurrency": 3, "rate": "10/min"}, headers=admin)
        assert own.status_code == 200, own.json
        assert own.json["applies"] == {"concurrency": 3, "rate": {"max": 10, "perMs": 60_000}}
        assert get_queue("email").flow.get_group("ride:7").concurrency == 3
        [entry] = newest_audit()
        assert (entry.action, entry.target) == ("queue.group_limits", "email/ride:7")
        assert entry.details["old"] == {"concurrency": None, "rate": None}
        assert entry.details["new"] == {"concurrency": 3, "rate": {"max": 10, "perMs": 60_000}}
        assert client.put(url, json={"concurrency": 1}, headers=viewer).status_code == 403
        assert client.put(url, json={"concurrency": "3"}, headers=admin).status_code == 422
        back = client.put(url, json={"concurrency": None, "rate": None}, headers=admin).json
        assert back["limits"] == {"concurrency": None, "rate": None} and back["applies"]["concurrency"] == 2
        assert client.get(f"/admin/queues/email/groups/{'x' * 101}/limits", headers=viewer).status_code == 404

        throttled = client.post("/admin/queues/email/throttle", json={"ms": 60_000}, headers=admin)
        assert throttled.status_code == 200, throttled.json
        assert 55_000 < throttled.json["throttledMs"] <= 60_000 and throttled.json["limitedBy"] == ["throttle"]
        assert newest_audit()[0].details == {"ms": 60_000}
        assert client.post("/admin/queues/email/throttle", json={"ms": 1}, headers=viewer).status_code == 403
        assert client.post("/admin/queues/email/throttle", json={"ms": -1}, headers=admin).status_code == 422
        assert client.post("/admin/queues/email/throttle", json={"ms": 0}, headers=admin).status_code == 200
        time.sleep(0.01)
        assert client.get("/admin/queues/email/limits", headers=viewer).json["throttledMs"] == 0


def overlap(jobs) -> int:
    """The most jobs that ran at once, from their start and finish times."""
    edges = sorted([(j.processed_on, 1) for j in jobs] + [(j.finished_at, -1) for j in jobs])
    most = running = 0
    for _, step in edges:  # at one ms, a finish (-1) sorts before a start
        running += step
        most = max(most, running)
    return most


def test_a_limit_set_through_the_api_applies_to_a_running_worker_at_once(stack, env, tmp_path, auth_headers):
    admin = auth_headers("1", "admin")
    smtp = stack.services.smtp.handler
    with own_app(env) as app:
        client = app.test_client()
        store = app.extensions["jobs"].store
        # The worker's environment sets a rate this test never reaches: the worker seeds it at start.
        worker_env = {**env, "EMAIL_RATE_LIMIT": "1000/s"}
        worker = start_worker(
            worker_env, tmp_path / "worker.log", queues="email", concurrency=4, name=f"l-{env['JOB_KEY_PREFIX']}@%h"
        )
        try:
            seeded = client.get("/admin/queues/email/limits", headers=admin).json
            assert (seeded["limits"]["rate"], seeded["setBy"]) == ({"max": 1000, "perMs": 1000}, "env")

            def batch(tag: str) -> list:
                jobs = []
                for _ in range(4):
                    data = mail(tag)
                    smtp.plan(data["to"], ("stall", 0.4))
                    jobs.append(add_email_job(data))
                return jobs

            assert client.put("/admin/queues/email/limits", json={"concurrency": 1}, headers=admin).status_code == 200
            one = batch("one")
            held = eventually_limited(client, admin)
            assert held["limitedBy"] == ["concurrency"] and held["active"] == 1 and held["waitingOnLimit"] >= 1
            one = wait_for_jobs(store, [j.id for j in one], ("completed",), 20, [tmp_path / "worker.log"])
            assert overlap(one) == 1, [(j.processed_on, j.finished_at) for j in one]

            # Lifted at run time, the same worker runs the next batch side by side.
            assert (
                client.put("/admin/queues/email/limits", json={"concurrency": None}, headers=admin).status_code == 200
            )
            four = wait_for_jobs(store, [j.id for j in batch("four")], ("completed",), 20, [tmp_path / "worker.log"])
            assert overlap(four) >= 3, [(j.processed_on, j.finished_at) for j in four]
        finally:
            stop(worker)


def eventually_limited(client, headers, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get("/admin/queues/email/limits", headers=headers).json
        if status["limited"] or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def test_the_environment_seeds_limits_until_an_operator_sets_them(env, auth_headers):
    admin = auth_headers("1", "admin")
    rate = {"max": 7, "perMs": 1000}
    with own_app(env) as app:  # (own_app empties the store once the app is built)
        seeded = app_from_env({**env, "PAYMENT_RATE_LIMIT": "7/s", "PAYMENT_GROUP_CONCURRENCY": "2"})
        try:
            shown = seeded.test_client().get("/admin/queues/payment/limits", headers=admin).json
        finally:
            close_app(seeded)
        assert shown["setBy"] == "env"
        assert shown["limits"] == {**NO_LIMITS, "rate": rate, "group": {"concurrency": 2, "rate": None}}
        assert get_queue("email").flow.get().to_dict() == NO_LIMITS

        # Another start with another value: the environment still rules, as nobody set them.
        close_app(app_from_env({**env, "PAYMENT_RATE_LIMIT": "9/s"}))
        assert get_queue("payment").flow.get().to_dict() == {**NO_LIMITS, "rate": {"max": 9, "perMs": 1000}}
        # A process started without any of the payment queue's variables (a CLI command from a
        # shell) leaves them as the stack seeded them; one set to nothing removes them.
        bare = {k: v for k, v in env.items() if not k.startswith("PAYMENT_")}
        close_app(app_from_env(bare))
        assert get_queue("payment").flow.get().to_dict() == {**NO_LIMITS, "rate": {"max": 9, "perMs": 1000}}
        close_app(app_from_env({**bare, "PAYMENT_RATE_LIMIT": "none"}))
        assert get_queue("payment").flow.get().to_dict() == NO_LIMITS
        close_app(app_from_env({**env, "PAYMENT_RATE_LIMIT": "9/s"}))

        # Once an operator sets them, no start replaces them, with other values or none.
        put = app.test_client().put("/admin/queues/payment/limits", json={"concurrency": 3}, headers=admin)
        assert put.status_code == 200
        for other in ({**env, "PAYMENT_RATE_LIMIT": "11/s", "PAYMENT_CONCURRENCY_LIMIT": "50"}, env):
            close_app(app_from_env(other))
            status = get_queue("payment").flow.status()
            assert status["setBy"] == "admin"
            assert status["limits"] == {**NO_LIMITS, "rate": {"max": 9, "perMs": 1000}, "concurrency": 3}


def test_a_bad_limit_in_the_environment_stops_the_start_naming_the_variable(env):
    with pytest.raises(SettingsError) as refused:
        app_from_env(
            {**env, "PAYMENT_RATE_LIMIT": "fast", "EMAIL_CONCURRENCY_LIMIT": "lots", "EMAIL_GROUP_RATE_LIMIT": "0/s"}
        )
    assert set(refused.value.errors) == {"PAYMENT_RATE_LIMIT", "EMAIL_CONCURRENCY_LIMIT", "EMAIL_GROUP_RATE_LIMIT"}
    assert "PAYMENT_RATE_LIMIT: must be like 25/s" in str(refused.value) and "'fast'" in str(refused.value)

    # A worker process refuses to start, and says why.
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "email", "--pool=solo"],
        env={**os.environ, **env, "EMAIL_RATE_LIMIT": "10 per second"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode != 0
    assert "invalid settings: EMAIL_RATE_LIMIT: must be like 25/s" in worker.stderr + worker.stdout


def held_groups() -> list:
    """No worker runs them: ride:1 holds 3 jobs back behind its first, ride:2 holds 1."""
    jobs = [add_email_job(mail("grp"), group="ride:1") for _ in range(4)]
    jobs += [add_email_job(mail("grp"), group="ride:2") for _ in range(2)]
    status = get_queue("email").flow.status()
    assert (status["grouped"], status["groupCount"]) == (4, 2), status
    assert [(g["group"], g["backlog"]) for g in status["groups"]] == [("ride:1", 3), ("ride:2", 1)]
    return jobs


def test_the_cli_shows_and_changes_limits_and_stats_show_them(env):
    with own_app(env) as app:
        runner = app.test_cli_runner()

        def jobs(*args: str):
            return runner.invoke(args=["jobs", *args])

        held_groups()
        shown = jobs("limits", "email")
        assert shown.exit_code == 0, shown.output
        assert "email: none (set by nobody)" in shown.output and "grouped 4 in 2 groups" in shown.output
        assert "ride:1  3          1" in shown.output

        changed = jobs(
            "limits",
            "email",
            "--rate",
            "25/s",
            "--concurrency",
            "3",
            "--group-concurrency",
            "2",
            "--group-rate",
            "5/min",
        )
        assert changed.exit_code == 0, changed.output
        assert "email: rate 25/s, concurrency 3, group 2 5/min (set by admin)" in changed.output
        want = {
            "rate": {"max": 25, "perMs": 1000},
            "concurrency": 3,
            "group": {"concurrency": 2, "rate": {"max": 5, "perMs": 60_000}},
        }
        assert get_queue("email").flow.get().to_dict() == want
        [entry] = newest_audit()
        assert entry.actor.startswith("cli:") and (entry.action, entry.details["new"]) == ("queue.limits", want)

        # none removes one limit; the others stay. A bad value changes nothing, naming its option.
        assert jobs("limits", "email", "--rate", "none").exit_code == 0
        assert get_queue("email").flow.get().to_dict() == {**want, "rate": None}
        before = newest_audit()[0].id
        for bad, option in (("--rate", "--rate"), ("--concurrency", "--concurrency"), ("--group-rate", "--group-rate")):
            refused = jobs("limits", "email", bad, "0/s" if "rate" in bad else "0")
            assert refused.exit_code == 2 and option in refused.output, refused.output
        assert jobs("limits", "email", "--concurrency", "many").exit_code == 2
        assert get_queue("email").flow.get().to_dict() == {**want, "rate": None}
        assert newest_audit()[0].id == before

        stats = jobs("stats")
        assert stats.exit_code == 0, stats.output
        header, _, *rows = stats.output.splitlines()
        assert header.split()[-3:] == ["limits", "on", "limit"] and "grouped" in header.split()
        email_row = next(row for row in rows if row.startswith("email"))
        assert "concurrency 3, group 2 5/min" in email_row
        # Two of a group at a time now: ride:2's second job went, ride:1's next one too.
        assert "email: 1 group held back; largest: ride:1 2 (2 in flight)" in stats.output
        as_json = jobs("stats", "--json")
        assert '"waitingOnLimit": 0' in as_json.output and '"groupCount": 1' in as_json.output


def signed_in(client, auth_headers, role: str, user: str) -> str:
    bearer = auth_headers(user, role)["Authorization"].removeprefix("Bearer ")
    assert client.post("/admin/login", data={"token": bearer}).status_code == 302
    with client.session_transaction() as session:
        return session["csrf"]


def test_the_health_page_shows_the_limits_panel_and_its_form_changes_them(env, auth_headers):
    with own_app(env) as app:
        held_groups()
        viewer = app.test_client()
        signed_in(viewer, auth_headers, "viewer", "9")
        page = viewer.get("/admin/ui/health/email").get_data(as_text=True)
        assert 'id="limits-form"' in page and 'id="limits-read-only"' in page and "Save limits" not in page
        assert "4 jobs held behind their group, in 2 groups" in page and "<code>ride:1</code>" in page
        assert viewer.post("/admin/ui/queues/email/limits", data={"concurrency": "1"}).status_code == 403

        admin = app.test_client()
        csrf = signed_in(admin, auth_headers, "admin", "1")
        page = admin.get("/admin/ui/health/email").get_data(as_text=True)
        assert "Save limits" in page and "limits-read-only" not in page and 'id="limit-rate"' in page
        form = {"csrf_token": csrf, "rate": "5/s", "concurrency": "2", "group_concurrency": "3", "group_rate": ""}
        assert admin.post("/admin/ui/queues/email/limits", data={**form, "csrf_token": "wrong"}).status_code == 403
        saved = admin.post("/admin/ui/queues/email/limits", data=form)
        assert saved.status_code == 302 and saved.location.endswith("/admin/ui/health/email")
        want = {"rate": {"max": 5, "perMs": 1000}, "concurrency": 2, "group": {"concurrency": 3, "rate": None}}
        assert get_queue("email").flow.get().to_dict() == want
        [entry] = newest_audit()
        assert (entry.actor, entry.action, entry.details["new"]) == ("user:1", "queue.limits", want)

        # Raising the group concurrency let each group's next jobs go: they wait on nothing now.
        page = admin.get("/admin/ui/health/email").get_data(as_text=True)
        assert "email limits: rate 5/s, concurrency 2, group 3." in page
        assert "0 of 2 running" in page and "0 of 5 slots used" in page and 'value="5/s"' in page

        bad = admin.post(
            "/admin/ui/queues/email/limits",
            data={**form, "rate": "fast", "concurrency": "2²", "group_concurrency": "0"},
        )
        text = bad.get_data(as_text=True)
        assert bad.status_code == 422
        for name in ("rate", "concurrency", "group_concurrency"):
            assert f'id="limit-error-{name}"' in text, name
        assert 'value="fast"' in text  # the inputs as sent, to correct
        assert get_queue("email").flow.get().to_dict() == want and newest_audit()[0].id == entry.id
        # Through the engine's own check (the form's numbers are numbers): one at a time.
        bad = admin.post("/admin/ui/queues/email/limits", data={**form, "rate": "0/s", "group_concurrency": "0"})
        text = bad.get_data(as_text=True)
        assert (
            bad.status_code == 422 and 'id="limit-error-rate"' in text and 'id="limit-error-group_concurrency"' in text
        )
        assert get_queue("email").flow.get().to_dict() == want


def metric(text: str, name: str) -> float | None:
    line = next((row for row in text.splitlines() if row.startswith(name + " ")), None)
    return None if line is None else float(line.rsplit(" ", 1)[1])


def test_metrics_show_each_queues_limits_and_what_waits_on_them(env, auth_headers):
    admin = auth_headers("1", "admin")
    with own_app(env) as app:
        client = app.test_client()
        held_groups()
        once = {"deduplicate": {"id": "welcome-1"}}
        first = add_email_job(mail("dd"), **once)
        assert add_email_job(mail("dd"), **once).id == first.id
        client.put("/admin/queues/email/limits", json={"rate": "600/min", "concurrency": 4}, headers=admin)
        client.post("/admin/queues/email/throttle", json={"ms": 30_000}, headers=admin)
        text = client.get("/metrics").get_data(as_text=True)
        q = '{queue="email"}'
        assert metric(text, f"rideshare_queue_rate_limit_jobs{q}") == 600
        assert metric(text, f"rideshare_queue_rate_limit_window_seconds{q}") == 60
        assert metric(text, f"rideshare_queue_concurrency_limit{q}") == 4
        assert metric(text, f"rideshare_queue_group_concurrency_limit{q}") == 1
        assert metric(text, f"rideshare_queue_grouped_jobs{q}") == 4
        assert metric(text, f"rideshare_queue_groups{q}") == 2
        assert metric(text, f"rideshare_queue_largest_group_backlog_jobs{q}") == 3
        assert 25 < metric(text, f"rideshare_queue_throttled_seconds{q}") <= 30
        assert metric(text, f"rideshare_queue_limited{q}") == 1
        # Waiting: the first job of each group, and the deduplicated job.
        assert metric(text, f"rideshare_queue_waiting_on_limit_jobs{q}") == 3
        assert metric(text, f"rideshare_jobs_deduplicated_total{q}") == 1
        assert metric(text, f"rideshare_jobs_rate_limited_total{q}") == 0
        # No limit: no sample (not a limit of 0); no label but the queue.
        assert metric(text, 'rideshare_queue_rate_limit_jobs{queue="payment"}') is None
        assert metric(text, 'rideshare_queue_waiting_on_limit_jobs{queue="payment"}') == 0
        assert "ride:1" not in text
