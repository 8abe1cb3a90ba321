"""The shipped schedules: the recurring jobs the service comes with, created at start when absent.

- ``payout-summary`` (PAYOUT_SUMMARY_CRON, PAYOUT_SUMMARY_TZ; 03:00 UTC): an analytics job
  that emails each driver the last whole day's rides and fares (rideshare.analytics.payouts);
- ``ride-expiry`` (RIDE_EXPIRY_CRON; every 5 minutes): an analytics job that expires rides left
  requested for more than RIDE_EXPIRY_MINUTES (30), with their payments not charged
  (rideshare.rides.service.expire_stale_rides);
- ``payment-recheck`` (PAYMENT_RECHECK_CRON; every 5 minutes): a payment job that settles the
  payments left pending or processing for more than PAYMENT_RECHECK_AFTER_MINUTES (15) by
  asking Stripe (rideshare.payments.reconcile).

Where: wherever a scheduler starts, since that is what fires them: each worker's start when
it runs one (JOB_SCHEDULER=worker), and ``flask jobs scheduler``. Not the API's start.

Once per job store: a marker (the hash ``{<prefix>}:schedules:shipped``, id -> when) records
that a shipped schedule was created (or found there already); from then on it is the
operators'. Their edits, pauses and removals stand across restarts: a start never writes
over a schedule, and a removed one is not made again while its marker stays
(``flask jobs schedule-reseed <id>`` drops the marker and makes it again). Any number of
processes may start at once: the one that takes a short lock seeds, the others leave it to it.
SHIPPED_SCHEDULES=false: none is created.
"""

import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, WatchError

from jobqueue import JobService
from jobqueue.schedules import InvalidSchedule, Schedules, Spec
from rideshare.config import SettingsError

log = logging.getLogger("rideshare.scheduler")

# The lock a seeding process holds: long enough for a few upserts, short enough that a
# process killed while it held it delays the next start's seeding by no more than this.
SEED_LOCK_MS = 10_000


@dataclass(frozen=True)
class ShippedSchedule:
    id: str
    cron: str
    tz: str
    job: Mapping[str, Any]
    missed: str = "run_once"
    settings: tuple[str, str] = ("", "")  # the variables of its cron and tz, for error messages


def shipped_schedules(config: Mapping[str, Any]) -> list[ShippedSchedule]:
    """The shipped schedules as config times them; SettingsError naming each bad variable."""
    found = [
        ShippedSchedule(
            "payout-summary",
            config["PAYOUT_SUMMARY_CRON"],
            config["PAYOUT_SUMMARY_TZ"],
            {"queue": "analytics", "data": {"event": "payout_summary", "eventId": "payout-summary"}},
            settings=("PAYOUT_SUMMARY_CRON", "PAYOUT_SUMMARY_TZ"),
        ),
        ShippedSchedule(
            "ride-expiry",
            config["RIDE_EXPIRY_CRON"],
            config["RIDE_EXPIRY_TZ"],
            {"queue": "analytics", "data": {"event": "expire_rides", "eventId": "expire-rides"}},
            settings=("RIDE_EXPIRY_CRON", "RIDE_EXPIRY_TZ"),
        ),
        ShippedSchedule(
            "payment-recheck",
            config["PAYMENT_RECHECK_CRON"],
            config["PAYMENT_RECHECK_TZ"],
            {"queue": "payment", "data": {"action": "reconcile"}},
            settings=("PAYMENT_RECHECK_CRON", "PAYMENT_RECHECK_TZ"),
        ),
    ]
    errors: dict[str, str] = {}
    for shipped in found:
        try:
            Spec.parse(cron=shipped.cron, tz=shipped.tz)
        except InvalidSchedule as exc:
            cron_var, tz_var = shipped.settings
            for name, message in exc.errors.items():
                variable = cron_var if name == "cron" else tz_var
                errors[variable] = f"{message} (got {config[variable]!r})"
    if errors:
        raise SettingsError(errors)
    return found


def marker_key(service: JobService) -> str:
    return f"{{{service.store.prefix}}}:schedules:shipped"


def seed_shipped_schedules(service: JobService, shipped: Iterable[ShippedSchedule]) -> list[str]:
    """Create each shipped schedule not seeded before in this job store; the ids created.

    Nothing when another process holds the seeding lock (it seeds), or Redis is away (the
    next start seeds; the store keeps what it had)."""
    redis = service.store.redis
    markers = marker_key(service)
    lock, token = f"{markers}:lock", secrets.token_hex(8)
    created: list[str] = []
    try:
        if not redis.set(lock, token, nx=True, px=SEED_LOCK_MS):
            log.info("schedules.shipped_seeding_elsewhere")
            return created
        try:
            schedules = Schedules(service)
            for item in shipped:
                if redis.hexists(markers, item.id):
                    continue  # seeded before: the operators' now, even if they removed it
                if schedules.get(item.id) is None:
                    schedules.upsert(item.id, cron=item.cron, tz=item.tz, job=item.job, missed=item.missed)
                    created.append(item.id)
                    log.info("schedule.shipped_created", extra={"schedule": item.id, "cron": item.cron, "tz": item.tz})
                # Marked after the upsert: a process killed between the two leaves it for the next start.
                redis.hset(markers, item.id, int(time.time() * 1000))
        finally:
            _unlock(redis, lock, token)
    except RedisError as exc:
        log.warning("schedules.shipped_not_seeded", extra={"error": str(exc)})
    return created


def _unlock(redis: Any, lock: str, token: str) -> None:
    """Delete the lock if it is still ours: one that outlived SEED_LOCK_MS may be another process's by now."""
    with redis.pipeline() as pipe:
        try:
            pipe.watch(lock)
            if pipe.get(lock) == token:
                pipe.multi()
                pipe.delete(lock)
                pipe.execute()
        except WatchError:
            pass  # taken over meanwhile: it is the other process's


def forget_shipped(service: JobService, schedule_id: str) -> bool:
    """Drop a shipped schedule's marker, so the next seeding makes it again; False if there was none."""
    return bool(service.store.redis.hdel(marker_key(service), schedule_id))
