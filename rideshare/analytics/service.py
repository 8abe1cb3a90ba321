"""record_event: store one analytics event and roll it into the aggregates, once.

A late delivery of a job needs no fencing here: the event's insert is keyed by its
eventId (a replay inserts nothing and adds nothing), the aggregates are sums added
in the same transaction, and a driver's last ride only ever moves forward.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case
from sqlalchemy.orm import Session

from rideshare.analytics.models import AnalyticsEvent, DailyRideStats, DriverStats
from rideshare.db import dialect_insert, get_db, utcnow

RIDE_COMPLETED = "ride_completed"


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
