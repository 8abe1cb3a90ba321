"""The data of an analytics job."""

from marshmallow import Schema, fields, validate

from rideshare.validation import text


class RideMetricsSchema(Schema):
    fare = fields.Decimal(as_string=True, allow_nan=False, validate=validate.Range(min=0, max=100_000))
    distance = fields.Float(allow_nan=False, validate=validate.Range(min=0, max=10_000))
    duration = fields.Integer(validate=validate.Range(min=0, max=7 * 24 * 3600))


class AnalyticsJobSchema(Schema):
    event = text("Event name, e.g. ride_completed", 64)
    eventId = text("Unique per event: a replay with the same id is counted once", 128)
    rideId = fields.Integer(allow_none=True)
    userId = fields.String(allow_none=True, validate=validate.Length(max=64))
    driverId = fields.String(allow_none=True, validate=validate.Length(max=64))
    occurredAt = fields.String(allow_none=True)
    data = fields.Nested(RideMetricsSchema, load_default=dict)
