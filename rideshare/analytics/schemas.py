"""The data of an analytics job."""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from rideshare.validation import MAX_AMOUNT, IdField, iso_datetime, row_id, text, two_decimals, user_id

# Every field the worker reads (rideshare.analytics.service.record_event) is checked here as
# the worker reads it, so bad data is refused when the job is added, never failed by a worker.


class RideMetricsSchema(Schema):
    fare = fields.Decimal(
        allow_nan=False,
        validate=[validate.Range(min=0, max=MAX_AMOUNT), two_decimals],
        metadata={"description": "In major units, at most 2 decimals (a number or a decimal string)"},
    )
    distance = fields.Float(allow_nan=False, validate=validate.Range(min=0, max=10_000))
    duration = fields.Integer(strict=True, validate=validate.Range(min=0, max=7 * 24 * 3600))


class AnalyticsJobSchema(Schema):
    event = text("Event name, e.g. ride_completed", 64)
    eventId = text("Unique per event: a replay with the same id is counted once", 128)
    rideId = IdField(allow_none=True, validate=row_id, metadata={"description": "The ride, as a number or its digits"})
    userId = user_id("The rider", required=False)
    driverId = user_id("The driver", required=False)
    occurredAt = fields.String(
        allow_none=True,
        validate=[validate.Length(max=64), iso_datetime],
        metadata={"description": "ISO 8601; without it, the time the worker records the event"},
    )
    data = fields.Nested(RideMetricsSchema, load_default=dict)
    # Event daily_rollup is no event: it recomputes a day's totals from the events recorded.
    day = fields.Date(
        metadata={
            "description": "daily_rollup: the day (UTC) whose totals are recomputed; payout_summary: the day "
            "(UTC) summarised (without it, the last whole day before its schedule's tick)"
        }
    )
    after = text("daily_rollup: an event id the roll-up waits for (the latest ride completed)", 128, required=False)

    @validates_schema
    def _rollup_names_its_day(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("event") == "daily_rollup" and data.get("day") is None:
            raise ValidationError("a daily_rollup needs its day", "day")

    @validates_schema
    def _settlement_names_its_ride(self, data: dict[str, Any], **_: Any) -> None:
        # settle_ride is no event either: the root of a ride's settlement flow (rideshare.rides.settlement).
        if data.get("event") == "settle_ride" and data.get("rideId") is None:
            raise ValidationError("a settle_ride needs its rideId", "rideId")
