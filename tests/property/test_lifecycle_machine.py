"""A stateful property test of the job store against a real Redis (Hypothesis RuleBasedStateMachine).

Random interleavings of add (in groups or not, with a deduplication key or not), fetch
(which promotes and recovers), finish (complete, fail, retry, snooze, rate_limit), release,
lease expiry, delete, clean, cancel, snooze and an operator's retry, from several workers
holding current and stale tokens. After every step:

- every job is in exactly one state set, the one its hash names;
- the counts equal the set sizes;
- a job moved only along a row of the transition table, and a finished job only by an
  operator's retry (or removal);
- a stale token changed nothing;
- no job was lost;
- a group (concurrency 1) has at most one job holding its slot, only a job of the group
  that is not final and not held back; a group with jobs held back has its slot taken (or
  a turn due); its backlog count is its held-back jobs;
- a deduplication key (mode simple) names a job that is not final.
"""

import uuid

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from jobqueue.flows import FAILURE_POLICIES, FlowJob
from jobqueue.lifecycle import FINISHED, REMOVED, STATES, next_state
from jobqueue.policy import QueuePolicy
from jobqueue.queue import EngineSettings, JobService
from jobqueue.store import JobStore, StaleDelivery, now_ms

QUEUE = "prop"
HOUR_MS = 3_600_000
WORKERS = ("w1", "w2", "w3")
# Every event that can move a job from a state, as the scripts may fire them unasked (fetch).
SPONTANEOUS = {
    ("delayed", "promote"),
    ("waiting", "fetch"),
    ("active", "stall"),
    ("active", "stall_fail"),
    ("active", "cancel"),  # its lease ran out with a cancel asked
    ("waiting", "expire"),
    ("delayed", "expire"),
    ("grouped", "turn"),  # its group's slot freed (any move that ends a job of the group)
    ("grouped", "expire"),
    ("delayed", "hold"),  # promoted while its group's slot is taken
    ("waiting-children", "children_done"),  # the relay (a rule) applied its children's ends
    ("waiting-children", "child_failed"),
    ("waiting-children", "hold"),
}
GROUPS = (None, "g1", "g2")
DEDUP_KEYS = (None, "k1")

REDIS_URL: list[str] = []


def pick(data: st.DataObject, items: list):
    """One of items, drawn by position (ids are random, so drawing them would not replay)."""
    return items[data.draw(st.integers(0, len(items) - 1))]


class JobStoreMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.client = redis.Redis.from_url(REDIS_URL[0], decode_responses=True)
        self.store = JobStore(self.client, prefix=f"prop-{uuid.uuid4().hex[:8]}")
        policy = QueuePolicy(name=QUEUE, task="prop.run", priorities=3)
        self.service = JobService.from_policies([policy], self.store, EngineSettings(attempts=1))
        self.queue = self.service.queue(QUEUE)
        self.model: dict[str, str] = {}  # job id -> state we last saw
        self.held: dict[str, tuple[str, object]] = {}  # job id -> (worker, record) of the current delivery
        self.stale: list[object] = []  # records of deliveries that no longer hold their job
        self.expired: dict[str, object] = {}  # job id -> record whose lease ran out, not yet taken over
        self.groups: dict[str, str | None] = {}  # job id -> its group
        self.flows: dict[str, list[str]] = {}  # a flow parent's id -> its children's ids

    def teardown(self) -> None:
        keys = list(self.client.scan_iter(f"{{{self.store.prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.close()

    # -- moves -----------------------------------------------------------------------

    @rule(
        priority=st.integers(0, 2),
        delayed=st.booleans(),
        expiring=st.booleans(),
        group=st.sampled_from(GROUPS),
        dedup=st.sampled_from(DEDUP_KEYS),
    )
    def add(self, priority: int, delayed: bool, expiring: bool, group: str | None, dedup: str | None) -> None:
        # Time is the machine's: a delayed job falls due, and an expiry falls, only when time_passes.
        job_id = f"j{len(self.model):04d}"
        expires = 2 * HOUR_MS if expiring else None
        options = {"group": group} if group else {}
        if dedup:
            options["deduplicate"] = {"id": dedup, "mode": "simple"}
        holder = self.client.get(f"{self.store.keys.tag(QUEUE)}:dd:{dedup}") if dedup else None
        job = self.queue.add(
            {"n": 1}, job_id=job_id, priority=priority, delay=HOUR_MS if delayed else 0, expires=expires, **options
        )
        if holder:  # the key's job stands for this one: nothing new is stored
            assert job.id == holder and self.store.get(job_id) is None
            return
        assert job.id == job_id
        if delayed:
            assert job.state == "delayed"
        elif group:
            assert job.state in ("waiting", "grouped")
        else:
            assert job.state == "waiting"
        self.model[job.id] = job.state
        self.groups[job.id] = group

    @rule(policy=st.sampled_from(FAILURE_POLICIES), group=st.sampled_from(GROUPS), children=st.integers(1, 3))
    def add_flow(self, policy: str, group: str | None, children: int) -> None:
        parent_id = f"j{len(self.model):04d}"
        kids = [FlowJob(QUEUE, {"n": i}, job_id=f"{parent_id}c{i}", failure=policy) for i in range(children)]
        options = {"group": group} if group else {}
        root = self.service.add_flow(FlowJob(QUEUE, {"n": 0}, job_id=parent_id, children=kids, options=options))
        assert root.state == "waiting-children"
        self.model[parent_id] = "waiting-children"
        self.groups[parent_id] = group
        self.flows[parent_id] = [k.job_id for k in kids]
        for kid in kids:
            self.model[kid.job_id] = "waiting"
            self.groups[kid.job_id] = None

    @rule()
    def relay(self) -> None:
        self.service.flows.relay()

    @rule(worker=st.sampled_from(WORKERS), count=st.integers(1, 4))
    def fetch(self, worker: str, count: int) -> None:
        waiting_before = {i for i, s in self.model.items() if s == "waiting"}
        _, jobs = self.store.fetch(QUEUE, count, worker, max_stalls=1)
        assert len(jobs) <= count
        for job_id, record in list(self.expired.items()):
            state, token = self.client.hmget(self.store.keys.job(job_id, QUEUE), "state", "token")
            if state != "active" or token != record.token:
                self.stale.append(self.expired.pop(job_id))  # stalled by this fetch, maybe taken again
        for job in jobs:
            assert job.state == "active" and job.worker == worker
            previous = self.held.get(job.id)
            if previous is not None:
                self.stale.append(previous[1])
            self.held[job.id] = (worker, job)
        # Whatever fetch left waiting ranks no better than what it took.
        taken = [j.priority for j in jobs]
        rest = self.store.get_many(waiting_before - {j.id for j in jobs})
        left = [j.priority for j in rest if j and j.state == "waiting"]
        if taken and left and len(jobs) == count:
            assert max(taken) <= min(left)
        self._sync()

    @precondition(lambda self: self.held)
    @rule(data=st.data(), event=st.sampled_from(["complete", "fail", "retry", "snooze", "cancel", "rate_limit"]))
    def finish(self, data: st.DataObject, event: str) -> None:
        job_id = pick(data, list(self.held))
        _, record = self.held.pop(job_id)
        attempts = int(self.client.hget(self.store.keys.job(job_id, QUEUE), "attempts"))
        score = now_ms() + (HOUR_MS if event in ("retry", "snooze") else 0)
        # A rate_limit throttles the queue for 1 ms only: the machine's fetches must still take jobs.
        self.store.finish(record, event, score=score, throttle_ms=1 if event == "rate_limit" else 0)
        self.model[job_id] = next_state("active", event)
        if event in ("snooze", "rate_limit"):  # the attempt it started is given back
            assert int(self.client.hget(self.store.keys.job(job_id, QUEUE), "attempts")) == attempts - 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = pick(data, list(self.model))
        outcome = self.queue.cancel(job_id, "asked")
        state = self.model[job_id]
        if state in ("waiting", "grouped", "delayed", "waiting-children"):
            assert outcome == "cancelled"
            self.model[job_id] = "cancelled"
        if outcome in ("cancelled", "cancelling"):  # a flow parent's unfinished children are cancelled too
            for kid in self.flows.get(job_id, []):
                if self.model[kid] in ("waiting", "grouped", "delayed", "waiting-children"):
                    self.model[kid] = "cancelled"
        elif state == "active":
            assert outcome == "cancelling"  # its delivery or its lease's end finishes it
        else:
            assert outcome == (None if state == REMOVED else state)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def operator_snooze(self, data: st.DataObject) -> None:
        job_id = pick(data, list(self.model))
        outcome = self.queue.snooze(job_id, HOUR_MS)
        state = self.model[job_id]
        if state in ("waiting", "grouped", "delayed"):
            assert outcome == "delayed"
            self.model[job_id] = "delayed"
        else:
            assert outcome == (None if state == REMOVED else state)

    @precondition(lambda self: self.stale)
    @rule(data=st.data(), event=st.sampled_from(["complete", "fail", "retry", "release"]))
    def stale_delivery_changes_nothing(self, data: st.DataObject, event: str) -> None:
        record = pick(data, self.stale)
        before = self.client.hgetall(self.store.keys.job(record.id, QUEUE))
        sets = self._sets()
        with pytest.raises(StaleDelivery):
            if event == "release":
                self.store.release(record)
            else:
                self.store.finish(record, event, score=now_ms())
        assert self.client.hgetall(self.store.keys.job(record.id, QUEUE)) == before
        assert self._sets() == sets

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        job_id = pick(data, list(self.held))
        _, record = self.held.pop(job_id)
        self.store.release(record)
        self.stale.append(record)
        self.model[job_id] = "waiting"

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def worker_dies(self, data: st.DataObject) -> None:
        """Its lease runs out (moved into the past): the next fetch stalls the job, and only then is
        the dead worker's delivery stale (a late finish before that is still its own)."""
        job_id = pick(data, list(self.held))
        _, record = self.held.pop(job_id)
        self.expired[job_id] = record
        self.client.zadd(self.store.keys.queue(QUEUE, "leases"), {job_id: 0})

    @rule()
    def time_passes(self) -> None:
        """Every delayed job falls due, every expiry falls: the next fetch promotes or expires them."""
        for name in ("delayed", "expiring"):
            key = self.store.keys.queue(QUEUE, name)
            for job_id in self.client.zrange(key, 0, -1):
                self.client.zadd(key, {job_id: 0})

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        job_id = pick(data, list(self.model))
        outcome = self.queue.delete(job_id)
        if self.model[job_id] == REMOVED:
            assert outcome is None
        elif self.model[job_id] == "active":
            assert outcome == "active"
        else:
            assert outcome == "deleted"
            self.model[job_id] = REMOVED
            self._forget(job_id)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), new_data=st.booleans())
    def admin_retry(self, data: st.DataObject, new_data: bool) -> None:
        job_id = pick(data, list(self.model))
        outcome = self.queue.retry(job_id, {"n": 2} if new_data else None)
        state = self.model[job_id]
        if state in ("failed", "cancelled", "expired"):
            assert outcome in (("waiting", "grouped") if self.groups.get(job_id) else ("waiting",))
            self.model[job_id] = outcome
        else:
            assert outcome == (None if state == REMOVED else state)

    @rule(state=st.sampled_from(["completed", "failed", "cancelled", "expired", "waiting", "grouped", "delayed"]))
    def clean(self, state: str) -> None:
        held_back = {job_id for job_id, was in self.model.items() if was == "grouped"}
        for job_id in self.queue.clean(state, grace_ms=0, limit=1000):
            assert self.model[job_id] == state
            self.model[job_id] = REMOVED
            self._forget(job_id)
        if state != "delayed":  # a delayed job's score is when it falls due, not when it entered
            left = set(self.client.zrange(self.store.keys.queue(QUEUE, state), 0, -1))
            # Cleaning a group's waiting job lets the group's next one go: it becomes waiting now.
            allowed = held_back if state == "waiting" else set()
            assert left <= allowed, f"clean left {state} jobs {left - allowed}"

    # -- bookkeeping ---------------------------------------------------------------

    def _forget(self, job_id: str) -> None:
        if job_id in self.expired:
            self.stale.append(self.expired.pop(job_id))
        record = self.held.pop(job_id, None)
        if record is not None:
            self.stale.append(record[1])

    def _sets(self) -> dict[str, set[str]]:
        return {state: set(self.client.zrange(self.store.keys.queue(QUEUE, state), 0, -1)) for state in STATES}

    def _sync(self) -> None:
        """Take the moves fetch may make unasked (promote, fetch, stall), checking each against the table."""
        for job_id, before in list(self.model.items()):
            if before == REMOVED:
                continue
            job = self.store.get(job_id)
            assert job is not None, f"job {job_id} lost (was {before})"
            if job.state != before:
                allowed = {next_state(before, e) for s, e in SPONTANEOUS if s == before}
                # promote then fetch may both happen in one call; a turn then a fetch too
                if before == "delayed":
                    allowed |= {"active", "expired", "grouped"}
                if before == "grouped":
                    allowed.add("active")
                if before == "waiting-children":
                    allowed |= {"active", "grouped"}
                if before == "active":
                    allowed.add("active")  # stalled and fetched again at once
                assert job.state in allowed, f"{job_id}: {before} -> {job.state} is not a move of the table"
                self.model[job_id] = job.state
            elif before == "active" and job_id not in self.held:
                pass  # a dead worker's job, until a fetch stalls it

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def each_job_in_exactly_one_set_and_counts_match(self) -> None:
        if not hasattr(self, "store"):
            return
        self._sync()  # a group's turn happens in whatever move ended its running job
        sets = self._sets()
        everywhere = [job_id for members in sets.values() for job_id in members]
        assert len(everywhere) == len(set(everywhere)), "a job is in two state sets"
        counts = self.store.counts(QUEUE)
        assert {s: counts[s] for s in STATES} == {s: len(m) for s, m in sets.items()}
        for state, members in sets.items():
            for job_id in members:
                assert self.client.hget(self.store.keys.job(job_id, QUEUE), "state") == state

    @invariant()
    def nothing_lost_and_finished_jobs_stay_finished(self) -> None:
        if not hasattr(self, "store"):
            return
        sets = self._sets()
        for job_id, state in self.model.items():
            if state == REMOVED:
                assert all(job_id not in m for m in sets.values())
                continue
            actual = self.client.hget(self.store.keys.job(job_id, QUEUE), "state")
            assert actual is not None, f"job {job_id} lost (model: {state})"
            if state in FINISHED:
                assert actual == state, f"finished job {job_id} moved {state} -> {actual} by itself"

    @invariant()
    def groups_hold_one_slot_and_never_stall(self) -> None:
        if not hasattr(self, "store"):
            return
        tag = self.store.keys.tag(QUEUE)
        backlog = dict(self.client.zrange(self.store.keys.queue(QUEUE, "groups"), 0, -1, withscores=True))
        due = set(self.client.zrange(self.store.keys.queue(QUEUE, "gdue"), 0, -1))
        for group in GROUPS[1:]:
            running = self.client.smembers(f"{tag}:g:{group}:run")
            held = set(self.client.zrange(f"{tag}:g:{group}", 0, -1))
            assert len(running) <= 1, f"group {group}: {running} hold its one slot"
            for job_id in running:
                assert self.groups.get(job_id) == group
                state = self.client.hget(self.store.keys.job(job_id, QUEUE), "state")
                assert state in ("waiting", "active", "delayed"), f"{job_id} holds {group}'s slot in {state}"
            for job_id in held:
                assert self.client.hget(self.store.keys.job(job_id, QUEUE), "state") == "grouped"
            assert int(backlog.get(group, 0)) == len(held)
            if held:
                assert running or group in due, f"group {group} holds back {held} with its slot free"

    @invariant()
    def a_flow_parent_counts_its_children_and_goes_on_once_they_are_relayed(self) -> None:
        if not hasattr(self, "store"):
            return
        outbox = self.client.llen(self.store.keys.queue(QUEUE, "flow:out"))
        for parent_id, kids in self.flows.items():
            key = self.store.keys.job(parent_id, QUEUE)
            state = self.client.hget(key, "state")
            if state is None:
                continue
            recorded = self.client.hkeys(f"{key}:results")
            assert set(recorded) <= {f"{QUEUE}|{k}" for k in kids}
            assert int(self.client.hget(key, "pending")) == len(kids) - len(recorded)
            ended = [k for k in kids if self.client.hget(self.store.keys.job(k, QUEUE), "state") in (*FINISHED, None)]
            if state == "waiting-children" and outbox == 0:
                assert len(ended) < len(kids), f"{parent_id} waits on children that all ended and were relayed"

    @invariant()
    def a_simple_dedup_key_names_an_unfinished_job(self) -> None:
        if not hasattr(self, "store"):
            return
        for key in DEDUP_KEYS[1:]:
            holder = self.client.get(f"{self.store.keys.tag(QUEUE)}:dd:{key}")
            if holder:
                state = self.client.hget(self.store.keys.job(holder, QUEUE), "state")
                assert state is not None and state not in FINISHED, f"key {key} held by {holder} in {state}"


def test_job_store_state_machine(redis_url: str) -> None:
    REDIS_URL[:] = [redis_url]
    run_state_machine_as_test(
        JobStoreMachine,
        settings=settings(
            max_examples=int(__import__("os").environ.get("MACHINE_EXAMPLES", 40)),
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
