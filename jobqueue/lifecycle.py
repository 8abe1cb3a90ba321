"""A job's life, in one table: state x event -> next state, with the guard each move needs.

This table is the only owner of a job's states. The Lua scripts that move jobs
(jobqueue/scripts/*.lua) never write a state themselves: they call ``move(job,
id, from, event, score)``, whose table of allowed moves is generated from
``TRANSITIONS`` into every script's preamble, and which refuses (returns nil)
any move the table does not hold. Adding a state is a row here, a script that
fires its event, and the app's faces.

``new`` is the state of a job not yet stored; ``removed`` the state of a job
whose record is deleted.
"""

from dataclasses import dataclass

# The states a stored job can be in, each a sorted set per queue.
STATES = (
    "waiting",
    "grouped",
    "delayed",
    "waiting-children",
    "active",
    "completed",
    "failed",
    "cancelled",
    "expired",
)
FINISHED = ("completed", "failed", "cancelled", "expired")
# States a job waits in before it runs: an operator may cancel, snooze or edit it there,
# and its expiry (option expires) applies there. 'grouped': ready, but behind its group's
# running jobs (option group); its group's turn moves it to waiting.
PENDING = ("waiting", "grouped", "delayed")
# The waiting set's score: priority * PRIORITY_STEP + the time (ms) the job became waiting.
PRIORITY_STEP = 10**13
NEW = "new"
REMOVED = "removed"


@dataclass(frozen=True)
class Transition:
    source: str
    event: str
    target: str
    guard: str  # what the script checks before the move, in words (the README draws these)


TRANSITIONS: tuple[Transition, ...] = (
    Transition(NEW, "add", "waiting", "the id is new"),
    Transition(NEW, "add_delayed", "delayed", "the id is new; a delay was asked for"),
    Transition(NEW, "hold", "grouped", "the id is new; its group has no free slot, or older jobs of it wait"),
    Transition(NEW, "wait_children", "waiting-children", "the id is new; added by add_flow with children"),
    Transition(
        "waiting-children",
        "children_done",
        "waiting",
        "every child is final (a failed one under policy ignore), or a child under continue_parent failed",
    ),
    Transition("waiting-children", "hold", "grouped", "its children are done, but its group has no free slot"),
    Transition(
        "waiting-children",
        "child_failed",
        "failed",
        "a child under policy fail_parent (the default) failed for good, or was cancelled or expired",
    ),
    Transition("waiting-children", "cancel", "cancelled", "an operator's or the app's cancel (its children too)"),
    Transition(
        "waiting",
        "fetch",
        "active",
        "the queue is not paused or throttled; under its concurrency and rate limits; "
        "first in priority, then in order added",
    ),
    Transition("delayed", "promote", "waiting", "due (its score has passed); its group, if any, has room"),
    Transition("delayed", "hold", "grouped", "due, but its group has no free slot"),
    Transition(
        "grouped",
        "turn",
        "waiting",
        "first of its group, and the group has a free slot (its concurrency) and its rate allows",
    ),
    Transition("active", "complete", "completed", "the delivery's token is the job's token"),
    Transition("active", "fail", "failed", "the delivery's token is the job's token"),
    Transition("active", "retry", "delayed", "the delivery's token; attempts left (decided by the worker's policy)"),
    Transition("active", "snooze", "delayed", "the delivery's token; the task raised Snooze: no attempt is spent"),
    Transition("active", "release", "waiting", "the delivery's token (a job stuck past its hard limit)"),
    Transition(
        "active",
        "rate_limit",
        "waiting",
        "the delivery's token; the gateway asked to slow down (429, SMTP 421): the whole queue "
        "takes no job for Retry-After, and no attempt is spent",
    ),
    Transition("active", "stall", "waiting", "its lease ran out (the worker died); stalls <= max; no cancel asked"),
    Transition("active", "stall_fail", "failed", "its lease ran out more than max stalls times"),
    Transition("waiting", "cancel", "cancelled", "an operator's or the app's cancel"),
    Transition("delayed", "cancel", "cancelled", "an operator's or the app's cancel"),
    Transition("grouped", "cancel", "cancelled", "an operator's or the app's cancel"),
    Transition(
        "active",
        "cancel",
        "cancelled",
        "a cancel was asked while it ran, and its delivery stopped (the token) or its lease ran out",
    ),
    Transition("waiting", "expire", "expired", "not started by its expiry (option expires)"),
    Transition("delayed", "expire", "expired", "not started by its expiry (option expires)"),
    Transition("grouped", "expire", "expired", "not started by its expiry (option expires)"),
    Transition("waiting", "defer", "delayed", "an operator's snooze: run it later"),
    Transition("grouped", "defer", "delayed", "an operator's snooze: run it later (it rejoins its group when due)"),
    Transition("delayed", "defer", "delayed", "an operator's snooze, or a debounced add (new data, the delay again)"),
    Transition("failed", "admin_retry", "waiting", "an operator's retry, optionally with new data"),
    Transition("cancelled", "admin_retry", "waiting", "an operator's retry, optionally with new data"),
    Transition("expired", "admin_retry", "waiting", "an operator's retry, optionally with new data"),
    *(
        Transition(state, "hold", "grouped", "an operator's retry; its group has no free slot")
        for state in ("failed", "cancelled", "expired")
    ),
    *(Transition(state, "delete", REMOVED, "an operator's delete") for state in STATES if state != "active"),
    *(Transition(state, "clean", REMOVED, "older than the grace") for state in STATES if state != "active"),
    *(Transition(state, "trim", REMOVED, "past the queue's retention") for state in FINISHED),
)

EVENTS = tuple(dict.fromkeys(t.event for t in TRANSITIONS))


def next_state(source: str, event: str) -> str | None:
    """The state event moves a job in source to, or None when the table does not allow it."""
    for row in TRANSITIONS:
        if row.source == source and row.event == event:
            return row.target
    return None


def lua_table() -> str:
    """The table as a Lua literal: ALLOWED[source][event] = target."""
    by_source: dict[str, dict[str, str]] = {}
    for row in TRANSITIONS:
        by_source.setdefault(row.source, {})[row.event] = row.target
    rows = ", ".join(
        f"['{source}'] = {{" + ", ".join(f"['{e}'] = '{t}'" for e, t in events.items()) + "}"
        for source, events in by_source.items()
    )
    return "{" + rows + "}"


def markdown() -> str:
    """The table for the README."""
    lines = ["| from | event | to | guard |", "|---|---|---|---|"]
    lines += [f"| {t.source} | {t.event} | {t.target} | {t.guard} |" for t in TRANSITIONS]
    return "\n".join(lines)
