"""Schedules against real worker processes, each running its embedded scheduler, and a dedicated
`flask jobs scheduler` process: one job per tick with three schedulers while one is SIGKILLed,
edits and pauses at run time, missed ticks, and the operators' faces (admin API, CLI, dashboard).

Every test has a job store of its own (own_queues_env and a key prefix of its own). The tests of
the engine's ticks touch no SQL and run once (sqlite_only); the operators' faces audit to SQL and
run on both databases."""

import re
import secrets
import signal
import time
from pathlib import Path

import pytest

from devstack.processes import start_python
from jobqueue.schedules import JOB_ID_PREFIX
from rideshare.jobs import get_schedule, get_schedules, pause_schedule, resume_schedule, upsert_schedule
from rideshare.jobs.control import audit_entries
from tests.conftest import eventually, own_app, start_worker, stop, wait_for_jobs

pytestmark = pytest.mark.integration


def mail(tag: str) -> dict:
    return {"to": f"{tag}@example.com", "subject": "Tick", "text": "a scheduled mail"}


@pytest.fixture
def env(own_queues_env) -> dict[str, str]:
    return {
        **own_queues_env,
        "JOB_KEY_PREFIX": f"sch{secrets.token_hex(3)}",
        "JOB_KEEP_COMPLETED": "10000",
        "JOB_TIMEOUT": "5000",  # a job of a killed worker is taken again after 12 s, not 37
    }


def fired_ticks(store, schedule_id: str, queue: str = "email") -> list[int]:
    """The ticks of the jobs a schedule made, from the job store itself (every job id it holds)."""
    prefix = f"{JOB_ID_PREFIX}{schedule_id}:"
    ids = store.redis.zrange(store.keys.queue(queue, "created"), 0, -1)
    return sorted(int(job_id.removeprefix(prefix)) for job_id in ids if job_id.startswith(prefix))


def fired_by(log: Path, schedule_id: str) -> int:
    """Ticks a worker's scheduler fired, from its log lines."""
    return len(re.findall(rf'"schedule.fired", "schedule": "{re.escape(schedule_id)}"', log.read_text()))


def test_three_schedulers_one_sigkilled_fire_each_tick_once(env, tmp_path, sqlite_only):
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        workers = []
        try:
            for i, log in enumerate(logs):
                workers.append(
                    start_worker(
                        env, log, queues="email", concurrency=2, pool="threads", name=f"s{i}-{secrets.token_hex(2)}@%h"
                    )
                )
            created = upsert_schedule("every-2s", every_ms=2000, job={"queue": "email", "data": mail("kill")})
            first = created.next
            # Run for 60 s of ticks; at the half, SIGKILL the worker whose scheduler fired the most.
            time.sleep(max(0.0, (first + 30_000) / 1000 - time.time()))
            counts = [fired_by(log, "every-2s") for log in logs]
            killed = max(range(3), key=lambda i: (counts[i], i))
            workers[killed].send_signal(signal.SIGKILL)
            workers[killed].wait(10)
            time.sleep(max(0.0, (first + 60_000 - 500) / 1000 - time.time()))
            paused = pause_schedule("every-2s")
            ticks = fired_ticks(store, "every-2s")
            ids = [f"{JOB_ID_PREFIX}every-2s:{t}" for t in ticks]
            jobs = wait_for_jobs(store, ids, ("completed",), timeout=60, logs=logs)
        finally:
            for worker in workers:
                stop(worker)
        after_kill = [fired_by(log, "every-2s") for log in logs]
    per_worker = {f"w{i}": after_kill[i] for i in range(3)}
    print(
        f"\nschedules: {len(ticks)} jobs for ticks {ticks[0]}..{ticks[-1]} (first due {first}, paused at "
        f"{paused.updated_at}); fired per scheduler {per_worker}; w{killed} SIGKILLed after {counts[killed]}"
    )
    expected = len(range(first, paused.updated_at + 1, 2000))
    assert 29 <= len(ticks) <= 31, ticks
    assert abs(len(ticks) - expected) <= 1, (len(ticks), expected)
    assert ticks[0] == first, "the first tick fired"
    assert [b - a for a, b in zip(ticks, ticks[1:], strict=False)] == [2000] * (len(ticks) - 1), (
        "no tick doubled nor lost"
    )
    assert len(set(job.id for job in jobs)) == len(ticks) and sum(after_kill) == len(ticks)
    assert sum(1 for c in after_kill if c) >= 2, "more than one scheduler fired ticks"
    assert after_kill[killed] == counts[killed], "the killed scheduler fired nothing more"
    assert sum(after_kill) - sum(counts) >= 12, "the two left went on firing after the kill"


def test_an_edit_and_a_pause_take_effect_within_one_tick(env, tmp_path, sqlite_only):
    log = tmp_path / "worker.log"
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        worker = start_worker(env, log, queues="email", concurrency=2, pool="threads")
        try:
            upsert_schedule("edited", every_ms=2000, job={"queue": "email", "data": mail("edit")})
            assert eventually(lambda: len(fired_ticks(store, "edited")) >= 2, timeout=6)
            edited = upsert_schedule("edited", every_ms=1000, job={"queue": "email", "data": mail("edit")})
            at = edited.updated_at
            assert eventually(lambda: len([t for t in fired_ticks(store, "edited") if t > at]) >= 3, timeout=5)
            after = [t for t in fired_ticks(store, "edited") if t > at]
            first = store.get(f"{JOB_ID_PREFIX}edited:{after[0]}", "email")
            reaction_ms = first.created_at - at
            assert after[0] == (at // 1000 + 1) * 1000, "the first tick of the new spec, within one tick"
            assert [b - a for a, b in zip(after, after[1:], strict=False)] == [1000] * (len(after) - 1)
            assert reaction_ms <= 1000 + 700, reaction_ms

            paused = pause_schedule("edited").updated_at
            time.sleep(2.6)
            late = [t for t in fired_ticks(store, "edited") if t > paused]
            assert late == [], "no tick after the pause"
            assert get_schedule("edited").history[0]["tick"] <= paused

            resumed = resume_schedule("edited")
            assert eventually(lambda: [t for t in fired_ticks(store, "edited") if t > paused], timeout=3) == [
                resumed.next
            ]
        finally:
            stop(worker)
    print(f"\nschedules: an edit (2 s -> 1 s) fired its first tick {reaction_ms} ms after the edit")


def test_missed_ticks_run_once_fires_one_and_skip_fires_none(env, tmp_path, sqlite_only):
    """No scheduler for 5 ticks (a worker runs, with JOB_SCHEDULER=off); then a dedicated scheduler
    process starts: the run_once schedule fires the latest missed tick once, the skip one fires none."""
    env = {**env, "JOB_SCHEDULER": "off"}
    log = tmp_path / "scheduler.log"
    with own_app(env) as app:
        store = app.extensions["jobs"].store
        worker = start_worker(env, tmp_path / "worker.log", queues="email", concurrency=2, pool="threads")
        scheduler = None
        try:
            once = upsert_schedule("once", every_ms=1000, job={"queue": "email", "data": mail("once")})
            upsert_schedule("skip", every_ms=1000, job={"queue": "email", "data": mail("skip")}, missed="skip")
            time.sleep(max(0.0, (once.next + 4_600) / 1000 - time.time()))  # five ticks due
            assert fired_ticks(store, "once") == fired_ticks(store, "skip") == [], "the worker fired nothing"
            scheduler = start_python(
                "flask", ["--app", "rideshare", "jobs", "scheduler"], env=env, log=log, start_new_session=True
            )
            assert eventually(lambda: len(fired_ticks(store, "skip")) >= 2, timeout=15), log.read_text()[-2000:]
            scheduler.send_signal(signal.SIGTERM)
            assert scheduler.wait(5) == 0, log.read_text()[-2000:]
            once_s, skip_s = get_schedule("once"), get_schedule("skip")
            jobs = wait_for_jobs(store, once_s.last_job_ids, ("completed",), timeout=20)
            once_fired, skip_fired = fired_ticks(store, "once"), fired_ticks(store, "skip")
        finally:
            if scheduler is not None:
                stop(scheduler)
            stop(worker)
    assert '"scheduler.stopped"' in log.read_text()

    def outcomes(schedule) -> list[tuple[int, str]]:
        return [(t["tick"], t["outcome"]) for t in reversed(schedule.history)]

    once_h, skip_h = outcomes(once_s), outcomes(skip_s)
    missed = [tick for tick, outcome in skip_h if outcome == "skipped"]
    print(f"\nschedules: {len(missed)} ticks missed; run_once {once_h}; skip {skip_h}")
    assert len(missed) >= 5 and missed == list(range(once.next, missed[-1] + 1, 1000))
    # run_once: the missed ticks but the latest skipped, the latest fired, then on time.
    assert once_h[: len(missed)] == [*((t, "skipped") for t in missed[:-1]), (missed[-1], "fired")]
    # skip: none of them fired; the next tick fires on time.
    assert skip_h[: len(missed)] == [(t, "skipped") for t in missed]
    assert skip_fired[0] == missed[-1] + 1000
    assert once_fired[:2] == [missed[-1], missed[-1] + 1000]
    assert all(job.state == "completed" for job in jobs)


def signed_in(client, auth_headers, role: str, user: str) -> str:
    bearer = auth_headers(user, role)["Authorization"].removeprefix("Bearer ")
    assert client.post("/admin/login", data={"token": bearer}).status_code == 302
    with client.session_transaction() as session:
        return session["csrf"]


def test_admin_routes_round_trip_refuse_viewers_and_bad_fields_and_audit(env, auth_headers):
    admin, viewer = auth_headers("1", "admin"), auth_headers("9", "viewer")
    with own_app(env) as app:
        client = app.test_client()
        body = {
            "cron": "30 2 * * *",
            "tz": "America/New_York",
            "job": {"queue": "email", "name": "email.send", "data": mail("nightly"), "options": {"priority": 3}},
            "missed": "skip",
        }
        put = client.put("/admin/schedules/nightly", json=body, headers=admin)
        assert put.status_code == 200, put.json
        got = client.get("/admin/schedules/nightly", headers=viewer).json
        assert got == put.json
        assert (got["cron"], got["tz"], got["everyMs"], got["missed"], got["paused"]) == (
            "30 2 * * *",
            "America/New_York",
            None,
            "skip",
            False,
        )
        assert got["job"] == {**body["job"], "data": {**mail("nightly"), "to": "n***@example.com"}}
        assert got["nextRunAt"] == get_schedules().get("nightly").spec.next_after(got["updatedAt"])
        assert [s["id"] for s in client.get("/admin/schedules", headers=viewer).json["schedules"]] == ["nightly"]
        [entry] = audit_entries(1, None)
        assert (entry.actor, entry.action, entry.target) == ("user:1", "schedule.create", "nightly")
        assert entry.details["old"] is None and entry.details["new"]["job"]["data"]["to"] == "n***@example.com"

        edited = client.put("/admin/schedules/nightly", json={**body, "everyMs": 60_000, "cron": None}, headers=admin)
        assert edited.status_code == 422  # cron: null is not a string
        edited = client.put(
            "/admin/schedules/nightly",
            json={"everyMs": 60_000, "job": body["job"]},
            headers=admin,
        )
        assert edited.status_code == 200 and edited.json["everyMs"] == 60_000 and edited.json["cron"] is None
        assert edited.json["nextRunAt"] % 60_000 == 0 and edited.json["missed"] == "run_once"
        assert audit_entries(1, None)[0].action == "schedule.update"

        paused = client.post("/admin/schedules/nightly/pause", headers=admin)
        assert paused.status_code == 200 and paused.json["paused"] and paused.json["nextRunAt"] is None
        resumed = client.post("/admin/schedules/nightly/resume", headers=admin).json
        assert not resumed["paused"] and resumed["nextRunAt"] > paused.json["updatedAt"]
        assert [e.action for e in audit_entries(2, None)] == ["schedule.resume", "schedule.pause"]

        # Viewers read only; refusals change nothing and audit nothing.
        before = audit_entries(1, None)[0].id
        for call in (
            lambda h: client.put("/admin/schedules/nightly", json=body, headers=h),
            lambda h: client.delete("/admin/schedules/nightly", headers=h),
            lambda h: client.post("/admin/schedules/nightly/pause", headers=h),
            lambda h: client.post("/admin/schedules/nightly/resume", headers=h),
        ):
            assert call(viewer).status_code == 403
        bad = client.put(
            "/admin/schedules/nightly",
            json={
                "everyMs": 2000,
                "cron": "0 3 * * *",
                "tz": "Mars/Olympus",
                "job": {"queue": "email", "name": "payment.charge", "data": {"to": "nobody"}},
            },
            headers=admin,
        )
        assert bad.status_code == 422, bad.json
        errors = bad.json["errors"]["json"]
        assert {"everyMs", "tz", "job"} <= set(errors) and set(errors["job"]) == {"name", "data"}, errors
        assert set(errors["job"]["data"]) == {"to", "subject", "text"}, errors
        only_data = client.put(
            "/admin/schedules/other", json={"everyMs": 2000, "job": {"queue": "email", "data": {}}}, headers=admin
        )
        assert only_data.status_code == 422 and set(only_data.json["errors"]["json"]["job"]["data"]) >= {"to"}
        for bad_body, field in (
            ({"everyMs": 10, "job": body["job"]}, "everyMs"),
            ({"everyMs": 2000, "job": {**body["job"], "queue": "taxi"}}, "job"),
            ({"everyMs": 2000, "job": body["job"], "missed": "twice"}, "missed"),
            ({"everyMs": 2000, "job": body["job"], "burst": 1}, "burst"),
            ({"cron": "0 3 * *", "job": body["job"]}, "cron"),
        ):
            refused = client.put("/admin/schedules/nightly", json=bad_body, headers=admin)
            assert refused.status_code == 422 and field in refused.json["errors"]["json"], (bad_body, refused.json)
        assert client.put("/admin/schedules/bad:id", json=body, headers=admin).status_code == 422
        assert client.get("/admin/schedules/nightly", headers=viewer).json["everyMs"] == 60_000
        assert audit_entries(1, None)[0].id == before

        assert client.delete("/admin/schedules/nightly", headers=admin).status_code == 204
        assert client.get("/admin/schedules/nightly", headers=viewer).status_code == 404
        assert client.delete("/admin/schedules/nightly", headers=admin).status_code == 404
        assert client.post("/admin/schedules/nightly/pause", headers=admin).status_code == 404
        assert client.get("/admin/schedules", headers=viewer).json == {"schedules": []}
        assert audit_entries(1, None)[0].action == "schedule.remove"
        assert client.get("/admin/schedules", headers={}).status_code == 401


def test_cli_sets_lists_pauses_resumes_and_removes(env):
    with own_app(env) as app:
        runner = app.test_cli_runner()

        def jobs(*args: str):
            return runner.invoke(args=["jobs", *args])

        data = '{"to": "cli@example.com", "subject": "s", "text": "t"}'
        made = jobs(
            "schedule-set", "cli", "--cron", "0 3 * * *", "--tz", "Europe/Paris", "--queue", "email", "--data", data
        )
        assert made.exit_code == 0, made.output
        assert "schedule cli: 0 3 * * * (Europe/Paris), next run" in made.output
        listed = jobs("schedules")
        assert listed.exit_code == 0 and "cli  " in listed.output and "0 3 * * * (Europe/Paris)" in listed.output
        assert jobs("schedule-pause", "cli").output.strip() == "schedule cli paused"
        assert get_schedule("cli").paused
        assert "resumed" in jobs("schedule-resume", "cli").output and not get_schedule("cli").paused
        bad = jobs("schedule-set", "cli", "--every-ms", "5", "--queue", "email", "--data", '{"to": 1}')
        assert bad.exit_code == 2 and "everyMs" in bad.output and '"data"' in bad.output, bad.output
        assert jobs("schedule-set", "cli", "--every-ms", "5000", "--queue", "email", "--data", "[1]").exit_code == 2
        assert get_schedule("cli").spec.cron == "0 3 * * *"
        assert '"id": "cli"' in jobs("schedules", "--json").output
        assert jobs("schedule-remove", "cli").exit_code == 0 and get_schedule("cli") is None
        assert jobs("schedule-remove", "cli").exit_code == 1
        actions = [e.action for e in audit_entries(4, None)]
        assert actions == ["schedule.remove", "schedule.resume", "schedule.pause", "schedule.create"]
        assert all(e.actor.startswith("cli:") for e in audit_entries(4, None))


def test_dashboard_schedules_page_pause_and_edit(env, auth_headers):
    with own_app(env) as app:
        schedules = get_schedules()
        upsert_schedule("page", every_ms=3_600_000, job={"queue": "email", "data": mail("page")})
        # A tick fired and one skipped, as a scheduler would record them (the real script).
        key = schedules.key("page", "email")
        schedules.redis.hset(key, "next", 3_600_000)
        schedules.fire("email", "page", 3 * 3_600_000 + 5)  # ticks 1 h and 2 h missed, 3 h fired
        shown = get_schedule("page")
        assert [t["outcome"] for t in shown.history] == ["fired", "skipped", "skipped"]

        viewer = app.test_client()
        signed_in(viewer, auth_headers, "viewer", "9")
        page = viewer.get("/admin/ui/schedules").get_data(as_text=True)
        assert 'data-schedule="page"' in page and 'href="/admin/ui/schedules"' in page  # the nav links it
        assert f'href="/admin/ui/jobs/{shown.last_job_ids[0]}"' in page
        assert 'data-chart="ticks"' in page and 'data-fired="1"' in page and 'data-ticks="3"' in page
        assert "Pause</button>" not in page and 'id="read-only"' in page
        detail = viewer.get("/admin/ui/schedules/page").get_data(as_text=True)
        assert 'id="schedule-read-only"' in detail and "Save schedule" not in detail and "p***@example.com" in detail
        assert viewer.post("/admin/ui/schedules/page/pause").status_code == 403
        assert viewer.post("/admin/ui/schedules/page", data={"every_ms": "1000"}).status_code == 403

        admin = app.test_client()
        csrf = signed_in(admin, auth_headers, "admin", "1")
        assert "Pause</button>" in admin.get("/admin/ui/schedules").get_data(as_text=True)
        assert admin.post("/admin/ui/schedules/page/pause", data={"csrf_token": "wrong"}).status_code == 403
        assert admin.post("/admin/ui/schedules/page/pause", data={"csrf_token": csrf}).status_code == 302
        assert get_schedule("page").paused and audit_entries(1, None)[0].action == "schedule.pause"
        assert "Resume</button>" in admin.get("/admin/ui/schedules").get_data(as_text=True)

        form = admin.get("/admin/ui/schedules/page").get_data(as_text=True)
        assert "Save schedule" in form and "p***@example.com" in form
        masked = '{"to": "p***@example.com", "subject": "Tick", "text": "edited"}'
        edit = {"csrf_token": csrf, "every_ms": "", "cron": "15 4 * * *", "tz": "Asia/Tokyo", "queue": "email"}
        saved = admin.post("/admin/ui/schedules/page", data={**edit, "data": masked, "missed": "skip"})
        assert saved.status_code == 302, saved.get_data(as_text=True)[-2000:]
        now = get_schedule("page")
        assert (now.spec.cron, now.spec.tz, now.missed, now.paused) == ("15 4 * * *", "Asia/Tokyo", "skip", True)
        assert now.data == {**mail("page"), "text": "edited"}, "a field left masked keeps its value"
        assert audit_entries(1, None)[0].action == "schedule.update"

        refused = admin.post("/admin/ui/schedules/page", data={**edit, "tz": "Nowhere", "data": '{"to": 3}'})
        text = refused.get_data(as_text=True)
        assert refused.status_code == 422 and 'id="schedule-error-tz"' in text and 'id="schedule-error-data"' in text
        assert 'value="Nowhere"' in text and get_schedule("page").spec.tz == "Asia/Tokyo"


def test_a_schedule_whose_job_changes_queue_moves_with_its_history(env):
    with own_app(env) as app:
        schedules = get_schedules()
        store = app.extensions["jobs"].store
        upsert_schedule("moving", every_ms=3_600_000, job={"queue": "email", "data": mail("moving")})
        schedules.redis.hset(schedules.key("moving", "email"), "next", 3_600_000)
        assert schedules.fire("email", "moving", 3_600_000 + 5)[0] == "fired"
        moved = upsert_schedule("moving", every_ms=60_000, job={"queue": "payment", "data": {"paymentId": 7}})
        assert (moved.queue, moved.fired, moved.last_job_ids) == ("payment", 1, ["sched:moving:3600000"])
        assert [t["tick"] for t in moved.history] == [3_600_000]
        assert not store.redis.exists(schedules.key("moving", "email"), f"{schedules.key('moving', 'email')}:history")
        assert store.redis.zscore(schedules.due_key("email"), "moving") is None
        assert store.redis.zscore(schedules.due_key("payment"), "moving") == moved.next
        assert [s.queue for s in schedules.list_all(history=False)] == ["payment"]
