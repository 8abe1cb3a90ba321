"""Flows: jobs that wait for other jobs (parent and children, as BullMQ's), and compensation.

    root = service.flows.add_flow(
        FlowJob("analytics", {"kind": "settle_ride", "rideId": 7}, children=[
            FlowJob("email", receipt, children=["charge"]),
            FlowJob("analytics", event, children=["charge"]),
        ], nodes={"charge": FlowJob("payment", {"paymentId": 9}, compensate=refund)}),
    )

A parent is stored ``waiting-children`` (a row of the transition table) and runs once
its children are final, with their results (``job.children_values()``). Trees nest, and
a node may be shared by several parents (named in ``nodes`` and referred to by name):
the ride's charge above is a child of both the receipt and the analytics event.

What a parent sees when a child fails for good (or is cancelled, or expires) is the
child's ``failure`` policy:

- ``fail_parent`` (the default): the parent fails at once ("child ... failed: ..."),
  and so on up the tree; its other children go on;
- ``ignore``: the child counts as final; the parent runs when all are, and sees the
  failure in ``job.children_failures()``;
- ``continue_parent``: the parent runs at once, without waiting for its other children
  (BullMQ's continueParentOnFailure).

Cancelling a parent cancels its children that have not finished (JobQueue.cancel).

**Compensation**: a node may declare the job that undoes it (``compensate={"queue",
"data", "options"}``). When the flow's root fails for good, the compensations of the
steps that completed run in the reverse order of their completion, one after another
(each is the parent of the one before it, policy ignore, so one that fails does not stop
the rest), exactly once: their ids are derived from the steps', and they are added in
one transaction with the root's mark that compensation began.

How the pieces meet across queues (each queue is its own Redis Cluster slot): a job that
ends writes what its parents (and the root) must know into its own queue's flow outbox
(``move()`` in the scripts); the relay (``FlowRelay.run``, in every worker's
housekeeping and right after a flow job finishes) applies each entry in the parent's
slot (flow.lua), idempotently, then removes it. A child that completes while its
parent's worker is dead still releases the parent: any worker's relay does it.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobqueue.errors import InvalidJobData
from jobqueue.options import InvalidJobOptions
from jobqueue.store import JobRecord, now_ms, to_json

FAILURE_POLICIES = ("fail_parent", "ignore", "continue_parent")
# How many outbox entries one relay pass applies per queue at most.
RELAY_BATCH = 500


@dataclass
class FlowJob:
    """One node of a flow: a job, its children (FlowJob, or the name of a shared node), the
    policy its parents apply when it fails, and the job that undoes it."""

    queue: str
    data: Mapping[str, Any]
    children: Sequence["FlowJob | str"] = ()
    failure: str = "fail_parent"
    compensate: Mapping[str, Any] | None = None  # {"queue", "data", "options"}
    options: Mapping[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    owner: str | None = None
    nodes: Mapping[str, "FlowJob"] = field(default_factory=dict)  # shared nodes, by name (root only)


def node_key(queue: str, job_id: str) -> str:
    return f"{queue}|{job_id}"


def split_key(key: str) -> tuple[str, str]:
    queue, job_id = key.split("|", 1)
    return queue, job_id


class Flows:
    """add_flow, the relay that moves the flow outboxes, and compensation, for one JobService."""

    def __init__(self, service: Any) -> None:
        """service: the JobService whose queues the flows' jobs are in (it builds this)."""
        self.service = service
        self.store = service.store

    # -- adding ---------------------------------------------------------------------

    def add_flow(self, root: FlowJob, *, extra: Callable[[Any], None] | None = None) -> JobRecord:
        """Store a whole flow in one transaction (all or nothing) and return its root job.

        Every node is checked first, as add checks a job (InvalidJobData and
        InvalidJobOptions name the node by its path: 'children.0.data', ...).
        extra(pipe) adds commands to the same transaction.
        """
        nodes: dict[int, tuple[FlowJob, Any]] = {}  # node -> (node, its PreparedJob)
        parents: dict[int, list[str]] = {}
        children: dict[int, list[str]] = {}
        named = root.nodes
        errors: dict[str, Any] = {}
        created_at = now_ms()

        def visit(node: FlowJob, path: str, stack: tuple[int, ...]) -> str | None:
            if id(node) in stack:
                errors[path] = "a flow cannot contain itself"
                return None
            if id(node) not in nodes:
                prepared = self._prepare(node, path, created_at, errors)
                if prepared is None:
                    return None
                nodes[id(node)] = (node, prepared)
                kids: list[str] = []
                for index, child in enumerate(node.children):
                    child_path = f"{path}children.{index}."
                    if isinstance(child, str):
                        if child not in named:
                            errors[child_path.rstrip(".")] = f"no shared node named {child!r} in nodes"
                            continue
                        child = named[child]
                    key = visit(child, child_path, (*stack, id(node)))
                    if key is not None and key not in kids:
                        kids.append(key)
                        parents.setdefault(id(child), []).append(node_key(node.queue, prepared.id))
                children[id(node)] = kids
            _, prepared = nodes[id(node)]
            return node_key(node.queue, prepared.id)

        root_key = visit(root, "", ())
        if errors:
            raise InvalidJobData(errors)
        existing = [p.id for _, p in nodes.values() if self.service.queue(p.record.queue).get_job(p.id)]
        if existing:
            raise InvalidJobOptions({"job_id": f"already used: {', '.join(existing)}"})
        with self.store.redis.pipeline(transaction=True) as pipe:
            for ident, (node, prepared) in nodes.items():
                queue = self.service.queue(node.queue)
                links: dict[str, Any] = {"flowRoot": root_key, "failurePolicy": node.failure}
                if parents.get(ident):
                    links["parents"] = to_json(parents[ident])
                if node.compensate:
                    links["compensate"] = to_json(dict(node.compensate))
                kids = children[ident]
                event = None
                if kids:
                    links["pending"] = len(kids)
                    event = "wait_children"
                    prepared.record.state = "waiting-children"
                    pipe.hset(
                        f"{self.store.keys.job(prepared.id, node.queue)}:children", mapping=dict.fromkeys(kids, "")
                    )
                args = self.store.add_args(
                    prepared.record,
                    queue._score(prepared),
                    **queue._add_options(prepared, 0),
                    event=event,
                    extra=links,
                )
                self.store._run("add", prepared.id, node.queue, args, client=pipe)
            if extra is not None:
                extra(pipe)
            pipe.execute()
        _, root_job = nodes[id(root)]
        root_job.record.store = self.store
        return root_job.record

    def _prepare(self, node: FlowJob, path: str, created_at: int, errors: dict[str, Any]) -> Any:
        """node's job checked and sealed (a PreparedJob), or None with errors named by path."""
        if node.queue not in self.service.queues:
            errors[f"{path}queue"] = f"no queue named {node.queue!r}"
            return None
        if node.failure not in FAILURE_POLICIES:
            errors[f"{path}failure"] = f"must be one of {', '.join(FAILURE_POLICIES)}"
        queue = self.service.queue(node.queue)
        try:
            prepared = queue.prepare(
                node.data, job_id=node.job_id, owner=node.owner, created_at=created_at, **dict(node.options)
            )
        except InvalidJobData as exc:
            errors[f"{path}data"] = exc.errors
            return None
        except (InvalidJobOptions, ValueError) as exc:
            errors[f"{path}options"] = getattr(exc, "errors", str(exc))
            return None
        if node.compensate is not None:
            spec = node.compensate
            if not isinstance(spec, Mapping) or spec.get("queue") not in self.service.queues:
                errors[f"{path}compensate"] = 'must be {"queue": a queue, "data": {...}, "options": {...}}'
            else:
                try:
                    self.service.queue(spec["queue"]).prepare(spec.get("data") or {}, **dict(spec.get("options") or {}))
                except (InvalidJobData, InvalidJobOptions, ValueError) as exc:
                    errors[f"{path}compensate"] = getattr(exc, "errors", str(exc))
        return prepared

    # -- reading --------------------------------------------------------------------

    def children(self, job: JobRecord) -> list[dict[str, Any]]:
        """A job's children: see JobStore.children."""
        return self.store.children(job.id, job.queue)

    # -- the relay ------------------------------------------------------------------

    def relay(self, queues: Sequence[str] | None = None) -> int:
        """Apply the flow outboxes of queues (all by default); how many entries it applied."""
        applied = 0
        redis = self.store.redis
        for name in queues or list(self.service.queues):
            key = self.store.keys.queue(name, "flow:out")
            for _ in range(RELAY_BATCH):
                entry = redis.lindex(key, 0)
                if entry is None:
                    break
                self._apply(entry)
                redis.lrem(key, 1, entry)  # this entry only: another relay may have taken it already
                applied += 1
        return applied

    def _apply(self, entry: str) -> None:
        found = json.loads(entry)
        if found["k"] == "rootfail":
            self.compensate(*split_key(found["root"]))
            return
        queue, job_id = split_key(found["parent"] if found["k"] == "child" else found["root"])
        if queue not in self.service.queues:
            return  # a queue this app no longer has: nothing waits there
        retention = self.service.queue(queue).keep_failed
        self.store._run("flow", job_id, queue, [entry, now_ms(), retention.count, retention.age_ms])

    def compensate(self, queue: str, job_id: str) -> JobRecord | None:
        """Run the compensations of a failed flow's completed steps, latest first, one after
        another, once (a second call finds the root marked and adds nothing)."""
        key = self.store.keys.job(job_id, queue)
        redis = self.store.redis
        if redis.hexists(key, "compensation"):
            return None
        steps = [(json.loads(v), k) for k, v in redis.hgetall(f"{key}:comp").items()]
        if not steps:
            return None
        steps.sort(key=lambda s: (s[0]["at"], s[1]))  # the order the steps completed
        # Built from the latest step's compensation (the deepest node: it runs first) up to the
        # earliest's (the chain's root: it runs last).
        chain: FlowJob | None = None
        for info, node in reversed(steps):
            spec = json.loads(info["spec"]) if isinstance(info["spec"], str) else info["spec"]
            _, step_id = split_key(node)
            chain = FlowJob(
                spec["queue"],
                spec.get("data") or {},
                options=spec.get("options") or {},
                job_id=f"comp-{step_id}"[:64],
                failure="ignore",
                children=[chain] if chain else [],
            )
        root = chain
        assert root is not None
        try:
            return self.add_flow(root, extra=lambda pipe: pipe.hset(key, "compensation", str(root.job_id)))
        except InvalidJobOptions:
            return None  # added already by another relay (its ids exist)
