"""Job options with the original BullMQ meaning (times in milliseconds)."""

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobqueue.store import Retention


class InvalidJobOptions(ValueError):
    """Job options that cannot be used; .errors maps each bad option to its message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Backoff:
    """How long to wait before attempt n+1: 'fixed' or 'exponential' from delay ms.

    jitter (0 to 1), as BullMQ's: the wait is drawn from [wait * (1 - jitter), wait], so
    jobs that failed together (a gateway outage) do not all come back at once.
    """

    type: str = "exponential"
    delay: int | None = None  # None: the app's JOB_RETRY_DELAY
    jitter: float = 0.0

    def wait_ms(self, attempts_made: int) -> int:
        """The wait after the attempts_made-th failed attempt (1-based)."""
        base = self.delay or 0
        wait = base if self.type == "fixed" else base * 2 ** max(attempts_made - 1, 0)
        if self.jitter:
            wait = int(wait * (1 - self.jitter) + random.random() * wait * self.jitter)  # noqa: S311 - not a secret
        return wait

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "delay": self.delay}
        if self.jitter:
            out["jitter"] = self.jitter
        return out

    @classmethod
    def parse(cls, value: Any) -> "Backoff":
        """Read a number (fixed delay) or {"type": ..., "delay": ms, "jitter": 0..1}."""
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return cls("fixed", value)
        if isinstance(value, Mapping) and set(value) <= {"type", "delay", "jitter"}:
            kind, delay = value.get("type", "exponential"), value.get("delay", 0)
            jitter = value.get("jitter", 0)
            jitter_ok = isinstance(jitter, int | float) and not isinstance(jitter, bool) and 0 <= jitter <= 1
            if kind in ("fixed", "exponential") and isinstance(delay, int) and delay >= 0 and jitter_ok:
                return cls(kind, delay, float(jitter))
        raise ValueError("must be {'type': 'exponential'|'fixed', 'delay': ms, 'jitter': 0..1} or ms")


@dataclass(frozen=True)
class JobOptions:
    """The options one job runs with, defaults already applied."""

    delay: int = 0
    attempts: int = 1
    backoff: Backoff = Backoff()
    timeout: int = 30000
    priority: int | None = None
    remove_on_complete: Any = None
    remove_on_fail: Any = None
    expires: int | None = None  # ms since the epoch: not started by then, the job ends expired
    # Jobs of one group run one at a time (or the group's concurrency), in the order added;
    # groups take turns (jobqueue.limits).
    group: str | None = None
    # {"id": key, "ttl": ms, "mode": simple|throttle|debounce|keep_last_if_active}: while a job
    # of the key holds it, adding another returns that job instead (as BullMQ's deduplication).
    deduplicate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "delay": self.delay,
            "attempts": self.attempts,
            "backoff": self.backoff.to_dict(),
            "timeout": self.timeout,
            "priority": self.priority,
            "removeOnComplete": self.remove_on_complete,
            "removeOnFail": self.remove_on_fail,
            "expires": self.expires,
            "group": self.group,
            "deduplicate": self.deduplicate,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "JobOptions":
        return cls(
            delay=raw.get("delay", 0),
            attempts=raw.get("attempts", 1),
            backoff=Backoff.parse(raw.get("backoff") or {}),
            timeout=raw.get("timeout", 30000),
            priority=raw.get("priority"),
            remove_on_complete=raw.get("removeOnComplete"),
            remove_on_fail=raw.get("removeOnFail"),
            expires=raw.get("expires"),
            group=raw.get("group"),
            deduplicate=raw.get("deduplicate"),
        )


def _non_negative_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_expires(value: Any, now: int) -> int:
    """An expires option as ms since the epoch: a number is ms from now; an ISO 8601 time
    (with its offset) or an aware datetime is absolute. Raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("must be more than 0 ms from now, or an ISO 8601 time")
        return now + value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be ms from now, or an ISO 8601 time with its offset") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("an ISO 8601 time needs its offset (Z or +hh:mm)")
        at = int(value.timestamp() * 1000)
        if at <= now:
            raise ValueError("is in the past")
        return at
    raise ValueError("must be ms from now, or an ISO 8601 time with its offset")


MAX_GROUP_LENGTH = 100


def check_group(value: Any) -> str:
    """A group option's value: 1 to 100 printable characters (a number is taken as text). Raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not (isinstance(value, str) and 0 < len(value) <= MAX_GROUP_LENGTH and value.isprintable()):
        raise ValueError(f"must be a name of 1 to {MAX_GROUP_LENGTH} printable characters, like ride:123")
    return value


DEDUP_MODES = ("simple", "throttle", "debounce", "keep_last_if_active")
MAX_DEDUP_ID_LENGTH = 200


def parse_deduplicate(value: Any, delay: int) -> dict[str, Any]:
    """A deduplicate option checked: {"id", "ttl" (ms, 0 = none), "mode"}. Raises ValueError.

    simple (the default; the key is held until its job is final, or ttl), throttle (held
    ttl ms: needs ttl), debounce (a still-delayed job takes the newest data and its delay
    starts again: needs delay), keep_last_if_active (while its job runs, one follow-up is
    kept, with the newest data, and runs after it).
    """
    if not isinstance(value, Mapping) or not set(value) <= {"id", "ttl", "mode"} or "id" not in value:
        raise ValueError('must be {"id": key, "ttl": ms, "mode": ' + "|".join(DEDUP_MODES) + "}")
    key, ttl, mode = value["id"], value.get("ttl", 0), value.get("mode", "simple")
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not (isinstance(key, str) and 0 < len(key) <= MAX_DEDUP_ID_LENGTH and key.isprintable()):
        raise ValueError(f"id must be 1 to {MAX_DEDUP_ID_LENGTH} printable characters")
    if not _non_negative_int(ttl):
        raise ValueError("ttl must be a whole number of milliseconds, 0 or more")
    if mode not in DEDUP_MODES:
        raise ValueError("mode must be one of " + ", ".join(DEDUP_MODES))
    if mode == "throttle" and not ttl:
        raise ValueError("mode throttle needs a ttl (ms): the window in which later jobs are ignored")
    if mode == "debounce" and not delay:
        raise ValueError("mode debounce needs a delay: the job runs once no add came for that long")
    return {"id": key, "ttl": ttl, "mode": mode}


def resolve_options(
    defaults: JobOptions, given: Mapping[str, Any], priorities: int = 10, now: int | None = None
) -> JobOptions:
    """Apply per-call options over the queue's defaults, naming every bad option.

    priorities: the queue's priority levels (the priority option runs 0 .. priorities-1).
    now: the job's creation time (ms), from which a relative expires counts.
    """
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    if given.get("expires") is not None:
        try:
            values["expires"] = parse_expires(given["expires"], now if now is not None else int(time.time() * 1000))
        except ValueError as exc:
            errors["expires"] = str(exc)
    for name in ("delay", "timeout"):
        if given.get(name) is not None:
            if _non_negative_int(given[name]):
                values[name] = given[name]
            else:
                errors[name] = "must be a whole number of milliseconds, 0 or more"
    if given.get("timeout") == 0:
        errors["timeout"] = "must be at least 1 ms"
    if given.get("attempts") is not None:
        if _non_negative_int(given["attempts"]) and given["attempts"] >= 1:
            values["attempts"] = given["attempts"]
        else:
            errors["attempts"] = "must be a whole number, 1 or more"
    if given.get("priority") is not None:
        if _non_negative_int(given["priority"]) and given["priority"] < priorities:
            values["priority"] = given["priority"]
        elif priorities == 1:
            errors["priority"] = "this queue has no priorities: leave it out or use 0"
        else:
            errors["priority"] = f"must be 0 (first) to {priorities - 1} (last)"
    if given.get("backoff") is not None:
        try:
            values["backoff"] = Backoff.parse(given["backoff"])
        except ValueError as exc:
            errors["backoff"] = str(exc)
    if given.get("group") is not None:
        try:
            values["group"] = check_group(given["group"])
        except ValueError as exc:
            errors["group"] = str(exc)
    if given.get("deduplicate") is not None:
        try:
            dedup = parse_deduplicate(given["deduplicate"], values.get("delay", defaults.delay))
            values["deduplicate"] = dedup
            if dedup["mode"] == "keep_last_if_active" and given.get("group") is not None:
                errors["group"] = "keep_last_if_active runs a key's jobs in a group of their own: leave group out"
        except ValueError as exc:
            errors["deduplicate"] = str(exc)
    for name in ("remove_on_complete", "remove_on_fail"):
        if given.get(name) is not None:
            try:
                Retention.parse(given[name], Retention())
                values[name] = given[name]
            except ValueError as exc:
                errors[name] = str(exc)
    unknown = set(given) - {
        "delay",
        "attempts",
        "backoff",
        "timeout",
        "priority",
        "remove_on_complete",
        "remove_on_fail",
        "expires",
        "group",
        "deduplicate",
    }
    for name in sorted(unknown):
        errors[name] = "unknown job option"
    if errors:
        raise InvalidJobOptions(errors)
    return JobOptions(**{**defaults.__dict__, **values})
