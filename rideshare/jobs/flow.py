"""Operators' flow control (admin API, dashboard, CLI): read and change a queue's limits, one
group's own limits, and throttle a queue. Every change is audited with the limits before and after."""

from collections.abc import Mapping
from typing import Any

from jobqueue.limits import GroupLimits, InvalidLimits
from jobqueue.options import check_group
from rideshare.audit import audit
from rideshare.jobs import get_queue

# An operator's throttle; 0 lifts one (a gateway's Retry-After is set by the engine, not here).
MAX_THROTTLE_MS = 3_600_000


def rate_text(rate: dict[str, int] | None) -> str:
    """{"max": 25, "perMs": 1000} as 25/s; none as -."""
    if rate is None:
        return "-"
    for unit, ms in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if rate["perMs"] % ms == 0:
            count = rate["perMs"] // ms
            return f"{rate['max']}/{'' if count == 1 else count}{unit}"
    return f"{rate['max']}/{rate['perMs']}ms"


def limits_text(limits: dict[str, Any]) -> str:
    """A queue's limits in a few words: 'rate 25/s, concurrency 20, group 1 at a time'."""
    parts = []
    if limits["rate"]:
        parts.append(f"rate {rate_text(limits['rate'])}")
    if limits["concurrency"] is not None:
        parts.append(f"concurrency {limits['concurrency']}")
    group = limits["group"]
    if group["concurrency"] != 1 or group["rate"]:
        parts.append(f"group {group['concurrency']}" + (f" {rate_text(group['rate'])}" if group["rate"] else ""))
    return ", ".join(parts) or "none"


def flow_status(queue_name: str, top: int = 20) -> dict[str, Any]:
    """The queue's limits, how full they are, what waits on them and its largest group backlogs."""
    return get_queue(queue_name).flow.status(top)


def set_limits(queue_name: str, body: Mapping[str, Any], *, actor: str) -> dict[str, Any]:
    """Apply a change (Limits.changed: a field given replaces, null removes, left out stays); the
    next fetch of every worker obeys it. Raises InvalidLimits naming each bad field, changing nothing."""
    flow = get_queue(queue_name).flow
    old = flow.get()
    new = old.changed(body)
    flow.set(new)
    audit(actor, "queue.limits", queue_name, old=old.to_dict(), new=new.to_dict())
    return flow.status()


def group_limits(queue_name: str, group: str) -> dict[str, Any]:
    """One group's own limits, and what applies to it (its own, else the queue's group defaults)."""
    check_group(group)
    flow = get_queue(queue_name).flow
    own, defaults = flow.get_group(group), flow.get()
    applies = {
        "concurrency": own.concurrency if own.concurrency is not None else defaults.group_concurrency,
        "rate": (own.rate or defaults.group_rate).to_dict() if (own.rate or defaults.group_rate) else None,
    }
    return {"queue": queue_name, "group": group, "limits": own.to_dict(), "applies": applies}


def set_group_limits(queue_name: str, group: str, body: Mapping[str, Any], *, actor: str) -> dict[str, Any]:
    """Replace one group's own limits (both null: back to the queue's group defaults). Raises
    InvalidLimits naming each bad field, ValueError for a name no group can have."""
    check_group(group)
    flow = get_queue(queue_name).flow
    new = GroupLimits.parse(body)
    old = flow.get_group(group)
    flow.set_group(group, new)
    audit(actor, "queue.group_limits", f"{queue_name}/{group}"[:200], old=old.to_dict(), new=new.to_dict())
    return group_limits(queue_name, group)


def throttle(queue_name: str, ms: int, *, actor: str) -> dict[str, Any]:
    """Take no job of the queue for ms (0: lift a throttle now); running jobs go on."""
    if not (isinstance(ms, int) and not isinstance(ms, bool) and 0 <= ms <= MAX_THROTTLE_MS):
        raise InvalidLimits({"ms": f"must be a whole number of ms from 0 to {MAX_THROTTLE_MS}"})
    flow = get_queue(queue_name).flow
    flow.throttle(ms)  # 0 is kept 1 ms: gone at once
    audit(actor, "queue.throttle", queue_name, ms=ms)
    return flow.status()
