"""Flows in the job store's scripts, against a real Redis (no worker): a parent waits for its
children, each failure policy, shared nodes, nesting, cancel, and compensation once, in reverse.

The same with worker processes (SIGKILLs, a Redis restart) is in test_flows_durable.py.
"""

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from jobqueue import EngineSettings, InvalidJobData, JobService, JobStore, QueuePolicy
from jobqueue.flows import FlowJob
from jobqueue.store import JobRecord, now_ms

pytestmark = pytest.mark.integration


@pytest.fixture
def service(redis_url: str) -> Iterator[JobService]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    store = JobStore(client, prefix=f"flows-{uuid.uuid4().hex[:8]}")
    policies = [QueuePolicy(name=name, task=f"{name}.run") for name in ("a", "b", "c")]
    yield JobService.from_policies(policies, store, EngineSettings(attempts=1))
    keys = list(client.scan_iter(f"{{{store.prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def run(service: JobService, queue: str, outcome: str = "complete", result: object = None) -> list[JobRecord]:
    """A worker's turn on queue: take every waiting job, end each with outcome, relay the flows."""
    _, jobs = service.store.fetch(queue, 100, "w", max_stalls=3)
    for job in jobs:
        fields = {"finishedAt": now_ms()}
        if outcome == "complete":
            fields["result"] = json.dumps(result if result is not None else {"from": job.id})
        else:
            fields["failedReason"] = "boom"
        service.store.finish(job, outcome, score=now_ms(), fields=fields)
    service.flows.relay()
    return jobs


def state(service: JobService, queue: str, job_id: str) -> str:
    return service.queue(queue).get_job(job_id).state


def test_a_parent_waits_for_its_children_then_runs_with_their_results(service):
    root = service.add_flow(
        FlowJob(
            "a",
            {"step": "settle"},
            job_id="root",
            children=[FlowJob("b", {"n": 1}, job_id="b1"), FlowJob("c", {"n": 2}, job_id="c1")],
        )
    )
    assert root.state == "waiting-children"
    assert service.store.counts("a")["waiting-children"] == 1
    assert run(service, "a") == [], "a parent is not fetched while its children run"
    run(service, "b")
    assert state(service, "a", "root") == "waiting-children"
    run(service, "c")
    assert state(service, "a", "root") == "waiting"
    job = service.queue("a").get_job("root")
    assert job.children_values() == {"b1": {"from": "b1"}, "c1": {"from": "c1"}}
    assert [c["state"] for c in service.store.children("root", "a")] == ["completed", "completed"]


def test_trees_nest_and_a_shared_node_releases_both_its_parents(service):
    charge = FlowJob("c", {"charge": 1}, job_id="charge")
    service.add_flow(
        FlowJob(
            "a",
            {"settle": 1},
            job_id="settle",
            children=[
                FlowJob("b", {"receipt": 1}, job_id="receipt", children=["charge"]),
                FlowJob("b", {"event": 1}, job_id="event", children=["charge"]),
            ],
            nodes={"charge": charge},
        )
    )
    assert state(service, "b", "receipt") == "waiting-children" == state(service, "b", "event")
    assert [j.id for j in run(service, "c")] == ["charge"]
    assert state(service, "b", "receipt") == "waiting" == state(service, "b", "event")
    assert run(service, "a") == []
    run(service, "b")
    assert [j.id for j in run(service, "a")] == ["settle"]


@pytest.mark.parametrize(
    ("policy", "parent_after_failure", "parent_after_rest"),
    [
        ("fail_parent", "failed", "failed"),
        ("ignore", "waiting-children", "waiting"),
        ("continue_parent", "waiting", "waiting"),
    ],
)
def test_what_a_parent_sees_when_a_child_fails(service, policy, parent_after_failure, parent_after_rest):
    service.add_flow(
        FlowJob(
            "a",
            {"p": 1},
            job_id="p",
            children=[FlowJob("b", {"x": 1}, job_id="bad", failure=policy), FlowJob("c", {"y": 1}, job_id="ok")],
        )
    )
    run(service, "b", "fail")
    assert state(service, "a", "p") == parent_after_failure
    if policy == "fail_parent":
        assert "child b|bad failed: boom" in service.queue("a").get_job("p").failed_reason
    run(service, "c")
    assert state(service, "a", "p") == parent_after_rest
    if parent_after_rest == "waiting":
        parent = service.queue("a").get_job("p")
        assert parent.children_failures() == {"bad": "failed: boom"}
        assert parent.children_values() == {"ok": {"from": "ok"}}


def test_cancelling_a_parent_cancels_its_unfinished_children(service):
    service.add_flow(
        FlowJob(
            "a",
            {"p": 1},
            job_id="p",
            children=[FlowJob("b", {"x": 1}, job_id="b1"), FlowJob("c", {"y": 1}, job_id="c1")],
        )
    )
    run(service, "b")
    assert service.queue("a").cancel("p", "ride cancelled") == "cancelled"
    assert state(service, "c", "c1") == "cancelled"
    assert state(service, "b", "b1") == "completed"
    service.flows.relay()  # the cancelled child tells its (cancelled) parent: nothing moves
    assert state(service, "a", "p") == "cancelled"


def test_a_bad_node_is_named_and_nothing_is_stored(service):
    with pytest.raises(InvalidJobData) as bad:
        service.add_flow(
            FlowJob("a", {}, children=[FlowJob("nope", {}), FlowJob("b", {}, failure="maybe", children=["x"])])
        )
    assert set(bad.value.errors) == {"children.0.queue", "children.1.failure", "children.1.children.0"}
    assert sum(service.store.counts(q)["waiting"] + service.store.counts(q)["waiting-children"] for q in "abc") == 0


def test_the_relay_is_idempotent(service):
    service.add_flow(
        FlowJob(
            "a",
            {"p": 1},
            job_id="p",
            children=[FlowJob("b", {"x": 1}, job_id="b1"), FlowJob("b", {"x": 2}, job_id="b2")],
        )
    )
    _, jobs = service.store.fetch("b", 100, "w", max_stalls=3)
    first = next(j for j in jobs if j.id == "b1")
    service.store.finish(first, "complete", score=now_ms(), fields={"result": "1"})
    entry = service.store.redis.lindex(service.store.keys.queue("b", "flow:out"), 0)
    # Applied twice (a relay that crashed before removing it), then by the relay: counted once.
    service.flows._apply(entry)
    service.flows._apply(entry)
    assert service.flows.relay() == 1
    assert service.store.redis.hget(service.store.keys.job("p", "a"), "pending") == "1"
    assert state(service, "a", "p") == "waiting-children"


def test_compensations_run_latest_first_once_when_the_root_fails(service):
    refund = {"queue": "c", "data": {"undo": "charge"}}
    unbook = {"queue": "c", "data": {"undo": "booking"}}
    service.add_flow(
        FlowJob(
            "a",
            {"settle": 1},
            job_id="settle",
            children=[
                FlowJob(
                    "b",
                    {"step": "charge"},
                    job_id="charge",
                    compensate=refund,
                    children=[FlowJob("b", {"step": "book"}, job_id="book", compensate=unbook)],
                )
            ],
        )
    )
    run(service, "b")  # book
    time.sleep(0.01)
    run(service, "b")  # charge
    run(service, "a", "fail")  # settle fails for good
    # Reverse order: comp-charge (the latest step's) runs first, comp-book only after it.
    assert [j.id for j in run(service, "c")] == ["comp-charge"]
    assert [j.id for j in run(service, "c")] == ["comp-book"]
    assert service.flows.compensate("a", "settle") is None, "a second call adds nothing"
    assert service.store.counts("c")["completed"] == 2 and service.store.counts("c")["waiting"] == 0
    assert service.store.redis.hget(service.store.keys.job("settle", "a"), "compensation") == "comp-book"
