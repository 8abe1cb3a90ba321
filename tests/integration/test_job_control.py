"""Cancel, expiry, snooze by an operator, data edits, progress, logs, events, search and the
per-minute buckets: the engine's own moves, through real workers and a real Redis."""

import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest

from devstack.processes import stop
from jobqueue import EngineSettings, InvalidJobData, JobService, JobStore, StaleDelivery
from jobqueue.scripts import Features
from jobqueue.store import percentiles
from rideshare.jobs import add_email_job, get_job, get_job_counts, get_queue
from rideshare.mail.queue import EMAIL_QUEUE
from tests.conftest import own_app, start_worker, wait_for_jobs

# The job store's moves, through real workers: they never touch SQL, so once, on SQLite.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("sqlite_only")]


def mail(**extra) -> dict:
    return {"to": f"c-{secrets.token_hex(4)}@example.com", "subject": "Hi", "text": "hello", **extra}


@pytest.fixture
def engine(redis_url):
    """A queue of its own (no worker serves its prefix): the test takes jobs by hand."""
    store = JobStore.from_url(redis_url, prefix=f"ctl{secrets.token_hex(3)}", features=Features(log_lines=3))
    service = JobService.from_policies([EMAIL_QUEUE], store, EngineSettings())
    yield service.queue("email")
    for key in store.redis.scan_iter(f"*{store.prefix}*"):
        store.redis.delete(key)


def test_a_cancelled_delayed_job_never_runs(app, stack):
    before = get_job_counts("email")["cancelled"]
    data = mail()
    job = add_email_job(data, delay=1500)
    assert get_queue("email").cancel(job.id, "rider changed plans") == "cancelled"

    time.sleep(2.5)  # past its delay: a worker fetched the queue meanwhile
    job = get_job(job.id)
    assert (job.state, job.cancel_reason, job.attempts) == ("cancelled", "rider changed plans", 0)
    assert stack.services.smtp.handler.messages_to(data["to"]) == []
    assert get_job_counts("email")["cancelled"] == before + 1
    # Once cancelled, it stays so: a second cancel says where it is.
    assert get_queue("email").cancel(job.id, "again") == "cancelled"


def test_a_cancel_made_while_every_worker_was_stopped_holds_when_one_starts(stack, own_queues_env, tmp_path):
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"off{secrets.token_hex(3)}"}
    with own_app(env) as app, app.app_context():
        store = app.extensions["jobs"].store
        cancelled, runs = mail(), mail()
        job = add_email_job(cancelled)
        assert get_queue("email").cancel(job.id, "support: duplicate") == "cancelled"
        later = add_email_job(runs)
        worker = start_worker(env, tmp_path / "worker.log", queues="email", concurrency=1)
        try:
            wait_for_jobs(store, [later.id], ("completed",), timeout=30)
        finally:
            stop(worker)
        assert get_job(job.id).state == "cancelled"
        assert stack.services.smtp.handler.messages_to(cancelled["to"]) == []
        assert len(stack.services.smtp.handler.messages_to(runs["to"])) == 1


def test_a_running_job_is_stopped_within_5_s_and_not_retried(app, stack):
    data = mail()
    stack.services.smtp.handler.plan(data["to"], ("stall", 20))  # blocked on the server, no check point
    job = add_email_job(data, attempts=3, timeout=25_000)
    stack.wait_for_job(job.id, ("active",), timeout=15)
    time.sleep(0.5)

    asked = time.monotonic()
    assert get_queue("email").cancel(job.id, "admin: runaway") == "cancelling"
    job = stack.wait_for_job(job.id, ("cancelled", "completed", "failed"), timeout=10)
    took = time.monotonic() - asked

    assert job.state == "cancelled", job
    assert took < 5, f"stopped after {took:.1f} s"
    assert (job.cancel_reason, job.attempts) == ("admin: runaway", 1)
    time.sleep(1.5)
    assert get_job(job.id).state == "cancelled", "a cancelled job is not retried"


def test_expires_ends_a_job_not_started_in_time_as_expired(app, stack):
    relative, absolute = mail(), mail()
    late = add_email_job(relative, delay=3000, expires=800)
    at = (datetime.now(UTC) + timedelta(milliseconds=900)).isoformat()
    later = add_email_job(absolute, delay=3000, expires=at)
    assert late.expires_at == late.created_at + 800
    assert get_job(later.id).expires_at == int(datetime.fromisoformat(at).timestamp() * 1000)

    for job_id in (late.id, later.id):
        job = stack.wait_for_job(job_id, ("expired", "completed", "failed"), timeout=10)
        assert job.state == "expired" and job.attempts == 0
        assert job.failed_reason.startswith("expired")
    time.sleep(2.5)
    assert stack.services.smtp.handler.messages_to(relative["to"]) == []
    assert stack.services.smtp.handler.messages_to(absolute["to"]) == []


def test_expires_is_refused_when_it_makes_no_sense(app):
    with pytest.raises(Exception, match="expires"):
        add_email_job(mail(), expires="tomorrow")
    with pytest.raises(Exception, match="expires"):
        add_email_job(mail(), expires="2020-01-01T00:00:00+00:00")


def test_an_operator_snoozes_and_edits_a_job_that_has_not_run(engine):
    job = engine.add(mail(), delay=60_000)
    with pytest.raises(InvalidJobData) as bad:
        engine.update_data(job.id, {"to": "not an address", "subject": "s", "text": "t"})
    assert "to" in bad.value.errors
    fixed = mail(subject="Corrected")
    assert engine.update_data(job.id, fixed) == "delayed"
    assert engine.get_job(job.id).data == fixed

    waiting = engine.add(mail())
    assert engine.snooze(waiting.id, 30_000) == "delayed"
    assert engine.get_job(waiting.id).state == "delayed"
    _, taken = engine.store.fetch("email", 10, "w1", max_stalls=1)
    assert taken == []  # neither is due

    # A running job's data is not edited, and it is not snoozed by an operator.
    running = engine.add(mail())
    _, [held] = engine.store.fetch("email", 1, "w1", max_stalls=1)
    assert held.id == running.id
    assert engine.update_data(running.id, mail()) == "active"
    assert engine.snooze(running.id, 1000) == "active"


def test_progress_and_logs_are_kept_per_attempt_bounded_and_fenced(engine):
    job = engine.add(mail())
    _, [held] = engine.store.fetch("email", 1, "w1", max_stalls=1)
    held.store = engine.store
    held.update_progress({"step": "connecting"})
    held.update_progress(40)
    for n in range(5):
        held.log(f"line {n} " + "x" * 600)
    assert engine.get_job(job.id).progress == 40
    logs = engine.store.logs(job.id, "email")
    assert [entry["line"][:6] for entry in logs] == ["line 0", "line 1", "line 2"]  # 3 per attempt here
    assert all(entry["attempt"] == 1 and len(entry["line"]) <= 501 for entry in logs)
    assert engine.get_job(job.id).raw["logsDropped"] == "2"

    # Its lease taken over (a stale delivery): its progress no longer lands.
    stale = engine.store.get(job.id, "email")
    stale.token = "0"
    with pytest.raises(StaleDelivery):
        stale.update_progress(99)
    with pytest.raises(ValueError, match="progress"):
        held.update_progress({"blob": "x" * 5000})


def test_events_stream_every_move_and_wait_until_finished_reads_them(app, stack):
    queue = get_queue("email")
    after = queue.store.last_event_id("email")
    job = add_email_job(mail())
    done = job.wait_until_finished(20)
    assert done.state == "completed"
    events = queue.store.read_events({"email": after}, block_ms=None, count=10_000)
    mine = [(fields["event"], fields["state"]) for _, _, fields in events if fields["id"] == job.id]
    moves = [entry for entry in mine if entry[0] not in ("progress", "log")]
    assert moves[:3] == [("add", "waiting"), ("fetch", "active"), ("complete", "completed")]
    assert ("progress", "active") in mine  # the email task reports the SMTP reply

    with pytest.raises(TimeoutError):
        add_email_job(mail(), delay=60_000).wait_until_finished(0.5)


def test_search_finds_jobs_by_their_tags_newest_first_with_a_cursor(engine):
    ride = secrets.token_hex(3)
    mine = []
    for _ in range(5):
        mine.append(engine.add(mail(), owner="rider-1", tags={"rideId": ride}))
        time.sleep(0.002)  # newest first is by creation time, in ms: jobs of one ms tie
    engine.add(mail(), owner="rider-2", tags={"rideId": ride})
    engine.add(mail(), owner="rider-1", tags={"rideId": "other"})

    found, cursor = engine.store.search("email", tags=[f"rideId:{ride}", "owner:rider-1"], limit=3)
    assert [job_id for _, job_id in found] == [j.id for j in reversed(mine)][:3]
    rest, end = engine.store.search("email", tags=[f"rideId:{ride}", "owner:rider-1"], cursor=cursor, limit=3)
    assert [job_id for _, job_id in rest] == [j.id for j in reversed(mine)][3:] and end is None

    assert len(engine.store.search("email", tags=[f"rideId:{ride}"])[0]) == 6
    assert engine.store.search("email", tags=[f"rideId:{ride}"], state="failed")[0] == []
    engine.cancel(mine[0].id, "x")
    assert [i for _, i in engine.store.search("email", state="cancelled")[0]] == [mine[0].id]
    # A removed job leaves its indexes.
    assert engine.delete(mine[1].id) == "deleted"
    assert mine[1].id not in [i for _, i in engine.store.search("email", tags=[f"rideId:{ride}"])[0]]
    with pytest.raises(Exception, match="tags"):
        engine.add(mail(), tags={"rideId": {"nested": 1}})


def test_per_minute_buckets_count_finishes_and_time_them(app, stack):
    job = stack.wait_for_job(add_email_job(mail()).id)
    assert job.state == "completed"
    store = get_queue("email").store
    buckets = store.history("email", minutes=2)
    assert len(buckets) == 2 and sum(b.get("completed", 0) for b in buckets) >= 1
    p = percentiles(buckets, "p", [0.5, 0.95])
    w = percentiles(buckets, "w", [0.5])
    assert p[0.5] is not None and p[0.95] >= p[0.5] and w[0.5] is not None


def test_on_a_threads_pool_a_cancel_breaks_off_a_job_blocked_on_its_server(stack, own_queues_env, tmp_path):
    """The shipped email worker is a threads pool, where nothing can be terminated: the cancel
    watch cuts the job's deadline, which shuts the SMTP socket it waits on (interruptible)."""
    env = {**own_queues_env, "JOB_KEY_PREFIX": f"thr{secrets.token_hex(3)}"}
    with own_app(env) as app, app.app_context():
        store = app.extensions["jobs"].store
        worker = start_worker(env, tmp_path / "worker.log", queues="email", pool="threads", concurrency=4)
        try:
            data = mail()
            stack.services.smtp.handler.plan(data["to"], ("stall", 20))
            job = add_email_job(data, attempts=3, timeout=25_000)
            wait_for_jobs(store, [job.id], ("active",), timeout=15)
            time.sleep(0.5)
            asked = time.monotonic()
            assert get_queue("email").cancel(job.id, "admin: stuck") == "cancelling"
            [job] = wait_for_jobs(store, [job.id], ("cancelled", "completed", "failed"), timeout=10)
            took = time.monotonic() - asked
        finally:
            stop(worker)
        assert job.state == "cancelled" and took < 5, (job.state, took)
        assert job.attempts == 1
