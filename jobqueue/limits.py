"""Flow control: a queue's global rate and concurrency limits, its groups' limits, and throttling.

The limits live in the job store (a hash per queue) and are decided by the fetch
script when it takes jobs, so they hold across any number of workers and hosts,
and a change applies to the next fetch, with no restart:

- ``rate`` (``Rate(max=25, per_ms=1000)``): at most max jobs of the queue hold a
  slot in any window of per_ms. A job holds its slot from when it is taken until
  it ends (a long job keeps it), so the gateway it calls never sees more than max
  jobs' calls in a window;
- ``concurrency``: at most that many of the queue's jobs are active at once;
- ``group_concurrency`` and ``group_rate``: what each group (option ``group``) may
  run at once (1: one at a time, in the order added), and how many of its jobs may
  go per window; one group can carry its own (``set_group``).

A job over a limit stays waiting: it spends no attempt, and the fetch tells the
worker how long to block until a slot frees. ``throttle(ms)`` (what a gateway's
429 does through the policy's ``back_pressure``) stops the whole queue for ms.

Where limits come from: the environment seeds them when a process starts
(``PAYMENT_RATE_LIMIT=25/s``, ``PAYMENT_CONCURRENCY_LIMIT=20``, ``PAYMENT_GROUP_CONCURRENCY``,
``PAYMENT_GROUP_RATE_LIMIT``), unless an operator has set them at run time
(admin API, CLI, dashboard): those stay until an operator changes them again.
"""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from jobqueue.options import InvalidJobOptions, check_group

UNITS_MS = {"ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}
MAX_RATE = 1_000_000
MAX_WINDOW_MS = 24 * 3_600_000
MAX_CONCURRENCY = 100_000
# Set by an operator at run time: the environment no longer replaces them at start.
SET_BY_ADMIN = "admin"
SET_BY_ENV = "env"


class InvalidLimits(InvalidJobOptions):
    """Limits that cannot be used; .errors maps each bad field to its message."""


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class Rate:
    """At most max jobs per per_ms milliseconds."""

    max: int
    per_ms: int

    def to_dict(self) -> dict[str, int]:
        return {"max": self.max, "perMs": self.per_ms}

    def __str__(self) -> str:
        return f"{self.max}/{self.per_ms}ms"

    @classmethod
    def parse(cls, value: Any) -> "Rate":
        """{"max": 25, "perMs": 1000}, or text: '25/s', '600/min', '10/500ms'. Raises ValueError."""
        if isinstance(value, str):
            found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*)\s*(ms|s|sec|m|min|h)\s*", value)
            if not found:
                raise ValueError("must be like 25/s, 600/min or 10/500ms")
            value = {"max": int(found[1]), "perMs": int(found[2] or 1) * UNITS_MS[found[3]]}
        if not isinstance(value, Mapping) or set(value) != {"max", "perMs"}:
            raise ValueError('must be {"max": jobs, "perMs": window in ms}, or null for none')
        if not _whole(value["max"], 1, MAX_RATE):
            raise ValueError(f"max must be a whole number from 1 to {MAX_RATE}")
        if not _whole(value["perMs"], 1, MAX_WINDOW_MS):
            raise ValueError(f"perMs must be a whole number of ms from 1 to {MAX_WINDOW_MS}")
        return cls(value["max"], value["perMs"])


@dataclass(frozen=True)
class Limits:
    """One queue's limits; None: no such limit."""

    rate: Rate | None = None
    concurrency: int | None = None
    group_concurrency: int = 1
    group_rate: Rate | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate.to_dict() if self.rate else None,
            "concurrency": self.concurrency,
            "group": {
                "concurrency": self.group_concurrency,
                "rate": self.group_rate.to_dict() if self.group_rate else None,
            },
        }

    def to_fields(self) -> dict[str, int]:
        """The store's hash (fields the fetch script reads; absent: no limit)."""
        fields: dict[str, int] = {}
        if self.rate:
            fields |= {"rateMax": self.rate.max, "rateMs": self.rate.per_ms}
        if self.concurrency is not None:
            fields["concurrency"] = self.concurrency
        if self.group_concurrency != 1:
            fields["groupConcurrency"] = self.group_concurrency
        if self.group_rate:
            fields |= {"groupRateMax": self.group_rate.max, "groupRateMs": self.group_rate.per_ms}
        return fields

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> "Limits":
        def rate(prefix: str) -> Rate | None:
            if raw.get(f"{prefix}Max") and raw.get(f"{prefix}Ms"):
                return Rate(int(raw[f"{prefix}Max"]), int(raw[f"{prefix}Ms"]))
            return None

        return cls(
            rate=rate("rate"),
            concurrency=int(raw["concurrency"]) if raw.get("concurrency") else None,
            group_concurrency=int(raw.get("groupConcurrency") or 1),
            group_rate=rate("groupRate"),
        )

    def changed(self, body: Mapping[str, Any]) -> "Limits":
        """These limits with a PUT body applied: a field given replaces, null removes, a
        field left out stays. {"rate": {"max": 25, "perMs": 1000} | "25/s" | null,
        "concurrency": 20 | null, "group": {"concurrency": 2, "rate": ... | null}}.
        Raises InvalidLimits naming every bad field."""
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        if not isinstance(body, Mapping):
            raise InvalidLimits({"_body": "must be a JSON object"})
        for name in sorted(set(body) - {"rate", "concurrency", "group"}):
            errors[name] = "unknown limit (rate, concurrency, group)"
        if "rate" in body:
            try:
                values["rate"] = None if body["rate"] is None else Rate.parse(body["rate"])
            except ValueError as exc:
                errors["rate"] = str(exc)
        if "concurrency" in body:
            if body["concurrency"] is None or _whole(body["concurrency"], 1, MAX_CONCURRENCY):
                values["concurrency"] = body["concurrency"]
            else:
                errors["concurrency"] = f"must be a whole number from 1 to {MAX_CONCURRENCY}, or null for none"
        group = body.get("group")
        if group is not None:
            if not isinstance(group, Mapping) or not set(group) <= {"concurrency", "rate"}:
                errors["group"] = 'must be {"concurrency": n, "rate": {"max", "perMs"} | null}'
            else:
                if "concurrency" in group:
                    if _whole(group["concurrency"], 1, MAX_CONCURRENCY):
                        values["group_concurrency"] = group["concurrency"]
                    else:
                        errors["group.concurrency"] = f"must be a whole number from 1 to {MAX_CONCURRENCY}"
                if "rate" in group:
                    try:
                        values["group_rate"] = None if group["rate"] is None else Rate.parse(group["rate"])
                    except ValueError as exc:
                        errors["group.rate"] = str(exc)
        if errors:
            raise InvalidLimits(errors)
        return replace(self, **values)

    @classmethod
    def from_env(cls, queue: str, environ: Mapping[str, str]) -> "Limits":
        """<QUEUE>_RATE_LIMIT (25/s), <QUEUE>_CONCURRENCY_LIMIT, <QUEUE>_GROUP_CONCURRENCY,
        <QUEUE>_GROUP_RATE_LIMIT; raises InvalidLimits naming the bad variable."""
        name = queue.upper()
        body: dict[str, Any] = {}
        group: dict[str, Any] = {}
        keys = {
            f"{name}_RATE_LIMIT": (body, "rate", str),
            f"{name}_CONCURRENCY_LIMIT": (body, "concurrency", int),
            f"{name}_GROUP_CONCURRENCY": (group, "concurrency", int),
            f"{name}_GROUP_RATE_LIMIT": (group, "rate", str),
        }
        errors = {}
        for key, (into, field, kind) in keys.items():
            text = (environ.get(key) or "").strip()
            if text and text.lower() not in ("none", "off"):
                try:
                    into[field] = kind(text)
                except ValueError:
                    errors[key] = "must be a whole number"
        if group:
            body["group"] = group
        try:
            limits = cls().changed(body)
        except InvalidLimits as exc:
            # Named by the variable that set the field (rate: <QUEUE>_RATE_LIMIT, not <QUEUE>_RATE).
            variables = {("group." if into is group else "") + field: key for key, (into, field, _) in keys.items()}
            errors |= {variables.get(k, k): v.removesuffix(", or null for none") for k, v in exc.errors.items()}
        if errors:
            raise InvalidLimits(errors)
        return limits


@dataclass(frozen=True)
class GroupLimits:
    """One group's own limits, over its queue's group defaults (None: the queue's)."""

    concurrency: int | None = None
    rate: Rate | None = None

    def to_json(self) -> str:
        out: dict[str, int] = {}
        if self.concurrency is not None:
            out["concurrency"] = self.concurrency
        if self.rate:
            out |= {"rateMax": self.rate.max, "rateMs": self.rate.per_ms}
        return json.dumps(out)

    @classmethod
    def from_json(cls, text: str | None) -> "GroupLimits":
        raw = json.loads(text) if text else {}
        rate = Rate(raw["rateMax"], raw["rateMs"]) if raw.get("rateMax") else None
        return cls(raw.get("concurrency"), rate)

    def to_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "rate": self.rate.to_dict() if self.rate else None}

    @classmethod
    def parse(cls, body: Any) -> "GroupLimits":
        """{"concurrency": n | null, "rate": {...} | "5/s" | null}; InvalidLimits names bad fields."""
        if not isinstance(body, Mapping):
            raise InvalidLimits({"_body": "must be a JSON object"})
        errors: dict[str, str] = {
            name: "unknown group limit (concurrency, rate)" for name in set(body) - {"concurrency", "rate"}
        }
        concurrency, rate = body.get("concurrency"), None
        if concurrency is not None and not _whole(concurrency, 1, MAX_CONCURRENCY):
            errors["concurrency"] = f"must be a whole number from 1 to {MAX_CONCURRENCY}, or null"
        if body.get("rate") is not None:
            try:
                rate = Rate.parse(body["rate"])
            except ValueError as exc:
                errors["rate"] = str(exc)
        if errors:
            raise InvalidLimits(errors)
        return cls(concurrency, rate)


class FlowControl:
    """A queue's limits in the job store: read, change (audited by the app), throttle, and see."""

    def __init__(self, store: Any, queue: str) -> None:
        self.store = store
        self.queue = queue
        self.key = store.keys.queue(queue, "limits")

    def get(self) -> Limits:
        return Limits.from_fields(self.store.redis.hgetall(self.key))

    def set_by(self) -> str | None:
        return self.store.redis.hget(self.key, "setBy")

    def set(self, limits: Limits, set_by: str = SET_BY_ADMIN) -> Limits:
        """Replace the queue's limits; the next fetch applies them, and groups held back by a
        lower group concurrency let their next jobs go at once."""
        fields = {**limits.to_fields(), "setBy": set_by}
        self.store._run("limits", "", self.queue, ["queue", json.dumps(fields)])
        return limits

    def seed(self, limits: Limits) -> bool:
        """At start: the environment's limits, unless an operator set them at run time."""
        if self.set_by() == SET_BY_ADMIN:
            return False
        if limits == self.get() and self.store.redis.exists(self.key) == bool(limits.to_fields()):
            return False
        if limits.to_fields():
            self.set(limits, SET_BY_ENV)
        else:
            self.store.redis.delete(self.key)
        return True

    def get_group(self, group: str) -> GroupLimits:
        return GroupLimits.from_json(self.store.redis.hget(self.store.keys.queue(self.queue, "glimits"), group))

    def set_group(self, group: str, limits: GroupLimits) -> GroupLimits:
        """One group's own limits (both None: back to the queue's group defaults)."""
        check_group(group)
        self.store._run("limits", "", self.queue, ["group", limits.to_json(), group])
        return limits

    def throttle(self, ms: int) -> None:
        """Take no job of this queue for ms (a gateway's Retry-After): BullMQ's worker.rateLimit."""
        self.store.redis.set(self.store.keys.queue(self.queue, "throttle"), "manual", px=max(int(ms), 1))

    def status(self, top: int = 20) -> dict[str, Any]:
        """What the dashboard, /metrics and `flask jobs stats` show: the limits, how full they
        are now, how many jobs wait on them, and the groups with the most held back."""
        keys = self.store.keys
        q = self.queue
        redis = self.store.redis
        seconds, micros = redis.time()
        now = seconds * 1000 + micros // 1000
        limits = self.get()
        with redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.key, "setBy")
            pipe.zcard(keys.queue(q, "active"))
            pipe.zcard(keys.queue(q, "waiting"))
            pipe.zcard(keys.queue(q, "grouped"))
            pipe.pttl(keys.queue(q, "throttle"))
            pipe.zcount(keys.queue(q, "rate"), f"({now - limits.rate.per_ms}" if limits.rate else "+inf", "+inf")
            pipe.zcard(keys.queue(q, "groups"))
            pipe.zrevrange(keys.queue(q, "groups"), 0, top - 1, withscores=True)
            set_by, active, waiting, grouped, throttled, rate_used, group_count, groups = pipe.execute()
        with redis.pipeline(transaction=False) as pipe:
            for group, _ in groups:
                pipe.scard(f"{keys.tag(q)}:g:{group}:run")
            running = pipe.execute()
        throttled = max(int(throttled), 0)
        at_concurrency = limits.concurrency is not None and active >= limits.concurrency
        at_rate = limits.rate is not None and rate_used >= limits.rate.max
        limited = bool(throttled) or at_concurrency or at_rate
        return {
            "queue": q,
            "limits": limits.to_dict(),
            "setBy": set_by,
            "active": active,
            "rateUsed": rate_used if limits.rate else None,
            "throttledMs": throttled,
            "limited": limited,
            "limitedBy": [
                name for name, on in (("throttle", throttled), ("concurrency", at_concurrency), ("rate", at_rate)) if on
            ],
            "waitingOnLimit": waiting if limited else 0,
            "grouped": grouped,
            "groupCount": group_count,
            "groups": [
                {"group": g, "backlog": int(n), "running": r} for (g, n), r in zip(groups, running, strict=True)
            ],
        }
