"""Ride request and response bodies."""

from marshmallow import Schema, fields, validate

from rideshare.payments.schemas import PaymentCreateSchema
from rideshare.validation import email_address, money, text, user_id


class RideCreateSchema(Schema):
    riderId = user_id("The rider's user id")
    driverId = user_id("The driver's user id")
    pickup = text("Pickup address or place", 200)
    dropoff = text("Drop-off address or place", 200)
    driverEmail = email_address(
        "Where the driver's nightly payout summary goes (the latest ride's address of a driver is used)",
        required=False,
    )


class RideCompleteSchema(Schema):
    driverId = user_id("Must be the ride's driver")
    fare = money("Fare charged for the ride")
    distance = fields.Float(
        required=True,
        allow_nan=False,
        validate=validate.Range(min=0, max=10_000),
        metadata={"description": "Distance in km"},
    )
    duration = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, max=7 * 24 * 3600),
        metadata={"description": "Duration in seconds"},
    )


class RideSchema(Schema):
    id = fields.Integer()
    riderId = fields.String(attribute="rider_id")
    driverId = fields.String(attribute="driver_id")
    pickup = fields.String()
    dropoff = fields.String()
    status = fields.String(
        metadata={"description": "requested, completed, cancelled, or expired (left requested too long)"}
    )
    fare = fields.Float(allow_none=True, metadata={"description": "In major units, at most 2 decimals"})
    distance = fields.Float(attribute="distance_km", allow_none=True)
    duration = fields.Integer(attribute="duration_s", allow_none=True)
    createdAt = fields.DateTime(attribute="created_at")
    completedAt = fields.DateTime(attribute="completed_at", allow_none=True)


class RideCancelSchema(Schema):
    reason = text("Why the ride is cancelled (kept with its payments and jobs)", 200, required=False)


class CancelledPaymentSchema(Schema):
    paymentId = fields.Integer(attribute="payment_id")
    status = fields.String(metadata={"description": "The payment's: cancelled, or failed (left as it was)"})
    jobId = fields.String(attribute="job_id", allow_none=True)
    jobState = fields.String(
        attribute="job_state",
        allow_none=True,
        metadata={
            "description": "What cancelling its job answered: cancelled (it never runs), cancelling "
            "(it was running and stops at its next check point) or the state it had finished in"
        },
    )


class RideCancellationSchema(Schema):
    message = fields.String()
    rideId = fields.Integer(attribute="ride_id")
    status = fields.String(metadata={"description": "cancelled"})
    payments = fields.List(fields.Nested(CancelledPaymentSchema))


class RideSettleSchema(PaymentCreateSchema):
    """What settling a ride needs: how the rider pays its fare (the amount is the ride's), and
    where the receipt goes."""

    class Meta:
        exclude = ("amount", "rideId")


class SettlementAcceptedSchema(Schema):
    message = fields.String()
    rideId = fields.Integer(attribute="ride_id")
    paymentId = fields.Integer(attribute="payment_id")
    jobId = fields.String(
        attribute="job_id", metadata={"description": "The settlement flow's root: GET /jobs/<jobId> lists its steps"}
    )
    state = fields.Function(
        lambda s: s.job.state if s.job else "removed",
        metadata={"description": "The root's state: waiting-children first; removed once trimmed"},
    )
