"""record_event: store one analytics event and roll it into the aggregates, once; roll_up_day:
recompute a day's totals from its events.

A late delivery of a job needs no fencing here: the event's insert is keyed by its
eventId (a replay inserts nothing and adds nothing), the aggregates are sums added
in the same transaction, and a driver's last ride only ever moves forward.
"""

import secrets
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, distinct, func, select
from sqlalchemy.orm import Session

from jobqueue import Job, Snooze
from rideshare.analytics.models import AnalyticsEvent, DailyRideStats, DailyRollup, DriverStats
from rideshare.db import dialect_insert, get_db, utcnow
from rideshare.jobs import StagedJob, stage_job

RIDE_COMPLETED = "ride_completed"
# Not an event: an analytics job that recomputes a day's totals from its events (roll_up_day).
DAILY_ROLLUP = "daily_rollup"
# A day's roll-up runs once no ride of that day was completed for ROLLUP_DELAY_MS (debounce:
# each completion pushes the waiting roll-up back and gives it the newest data), so a burst
# of completions makes one roll-up, run after it. Under completions that never pause that
# long, the key lapses after ROLLUP_MAX_HOLD_MS and the next completion starts another
# roll-up: one runs at least every ROLLUP_MAX_HOLD_MS + ROLLUP_DELAY_MS.
ROLLUP_DELAY_MS = 2_000
ROLLUP_MAX_HOLD_MS = 10_000
# A roll-up whose latest event is not recorded yet (its job is still queued) waits for it,
# this long at a time and this many times at most, then counts what is there.
ROLLUP_WAIT_S = 0.5
ROLLUP_MAX_WAITS = 20


def record_event(data: dict[str, Any]) -> dict[str, Any]:
    """Store the event; a replay of the same eventId changes nothing."""
    body = data.get("data") or {}
    fare = Decimal(str(body["fare"])) if body.get("fare") is not None else None
    distance = float(body["distance"]) if body.get("distance") is not None else None
    duration = int(body["duration"]) if body.get("duration") is not None else None
    occurred_at = datetime.fromisoformat(data["occurredAt"]) if data.get("occurredAt") else utcnow()
    driver_id = _id_text(data.get("driverId"))
    with get_db().session() as session:
        insert = dialect_insert(session)
        event_pk = session.scalar(
            insert(AnalyticsEvent)
            .values(
                event_id=data["eventId"],
                event=data["event"],
                ride_id=int(data["rideId"]) if data.get("rideId") is not None else None,
                user_id=_id_text(data.get("userId")),
                driver_id=driver_id,
                fare=fare,
                distance_km=distance,
                duration_s=duration,
                payload=body,
                occurred_at=occurred_at,
                recorded_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(AnalyticsEvent.id)
        )
        if event_pk is None:
            return {"eventId": data["eventId"], "recorded": False, "duplicate": True}
        if data["event"] == RIDE_COMPLETED:
            _add_ride(session, driver_id, occurred_at, fare, distance, duration)
    return {"eventId": data["eventId"], "recorded": True, "duplicate": False}


def _id_text(value: Any) -> str | None:
    """A user id as stored: the schema takes 42 and "42" as the same id."""
    return None if value is None else str(value)


def _add_ride(
    session: Session,
    driver_id: str | None,
    occurred_at: datetime,
    fare: Decimal | None,
    distance: float | None,
    duration: int | None,
) -> None:
    """Add one completed ride to its day's totals and its driver's."""
    insert = dialect_insert(session)
    amounts = {
        "rides": 1,
        "revenue": fare or Decimal("0"),
        "distance_km": distance or 0.0,
        "duration_s": duration or 0,
    }
    day = insert(DailyRideStats).values(day=occurred_at.date(), **amounts)
    session.execute(
        day.on_conflict_do_update(
            index_elements=["day"],
            set_={name: getattr(DailyRideStats, name) + day.excluded[name] for name in amounts},
        )
    )
    if driver_id is None:
        return
    driver = insert(DriverStats).values(driver_id=driver_id, last_ride_at=occurred_at, **amounts)
    session.execute(
        driver.on_conflict_do_update(
            index_elements=["driver_id"],
            set_={
                **{name: getattr(DriverStats, name) + driver.excluded[name] for name in amounts},
                # An older ride recorded late (a retried job) leaves a later one in place.
                "last_ride_at": case(
                    (DriverStats.last_ride_at > driver.excluded.last_ride_at, DriverStats.last_ride_at),
                    else_=driver.excluded.last_ride_at,
                ),
            },
        )
    )


def stage_daily_rollup(session: Session, day: date, after: str, *, owner: str | None = None) -> StagedJob:
    """Stage (in session's transaction) the day's roll-up, debounced: one per burst of completions.

    after: the event id of the ride completed in this transaction; the roll-up waits for it.
    Published, a roll-up already delayed for the day takes this one's data and waits anew
    (the publish returns that job); otherwise this one is added, with the day's key.
    """
    return stage_job(
        session,
        "analytics",
        {"event": DAILY_ROLLUP, "eventId": f"rollup-{day.isoformat()}", "day": day.isoformat(), "after": after},
        # Unique per staged row: the outbox keys rows by job id; the queue's key is the day.
        job_id=f"rollup-{day.isoformat()}-{secrets.token_hex(4)}",
        owner=owner,
        delay=ROLLUP_DELAY_MS,
        deduplicate={"id": f"rollup:{day.isoformat()}", "mode": "debounce", "ttl": ROLLUP_MAX_HOLD_MS},
        tags={"rollup": day.isoformat()},
    )


def roll_up_day(job: Job) -> dict[str, Any]:
    """Recompute the job's day's totals from its ride_completed events, in one SQL query, and store them.

    Snoozes (no attempt spent) while the event it waits for is not recorded yet, at most
    ROLLUP_MAX_WAITS times. A rerun computes the same totals: it needs no fencing.
    """
    data = job.data
    day = date.fromisoformat(data["day"])
    after = data.get("after")
    if after and job.snoozes < ROLLUP_MAX_WAITS and not _recorded(after):
        raise Snooze(ROLLUP_WAIT_S, f"waiting for event {after} to be recorded")
    start = datetime.combine(day, time.min, tzinfo=UTC)
    event = AnalyticsEvent
    totals = select(
        func.count().label("rides"),
        func.coalesce(func.sum(event.fare), Decimal("0")).label("revenue"),
        func.coalesce(func.sum(event.distance_km), 0.0).label("distance_km"),
        func.coalesce(func.sum(event.duration_s), 0).label("duration_s"),
        func.count(distinct(event.driver_id)).label("drivers"),
        func.count(distinct(event.user_id)).label("riders"),
    ).where(event.event == RIDE_COMPLETED, event.occurred_at >= start, event.occurred_at < start + timedelta(days=1))
    with get_db().session() as session:
        row = session.execute(totals).one()
        values = {
            "rides": row.rides,
            "revenue": Decimal(row.revenue).quantize(Decimal("0.01")),
            "distance_km": float(row.distance_km),
            "duration_s": int(row.duration_s),
            "drivers": row.drivers,
            "riders": row.riders,
            "computed_at": utcnow(),
        }
        upsert = dialect_insert(session)(DailyRollup).values(day=day, **values)
        session.execute(
            upsert.on_conflict_do_update(index_elements=["day"], set_={name: upsert.excluded[name] for name in values})
        )
    return {
        "day": day.isoformat(),
        **{k: v for k, v in values.items() if k != "computed_at"},
        "revenue": str(values["revenue"]),
        "waited": job.snoozes,
    }


def _recorded(event_id: str) -> bool:
    with get_db().session() as session:
        return session.scalar(select(AnalyticsEvent.id).where(AnalyticsEvent.event_id == event_id)) is not None
