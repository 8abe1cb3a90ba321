"""Payment request and response bodies."""

from marshmallow import Schema, ValidationError, fields, validate

from rideshare.currencies import ISO_4217
from rideshare.validation import identifier, money, pattern


def iso_currency(value: str) -> None:
    """Accept only currency codes ISO 4217 lists today (any letter case)."""
    if value.upper() not in ISO_4217:
        raise ValidationError("is not an ISO 4217 currency code")


class PaymentCreateSchema(Schema):
    amount = money("Amount to charge, in major units (25.50)")
    currency = fields.String(
        load_default="USD",
        validate=[pattern(r"[A-Za-z]{3}", "must be a 3-letter ISO 4217 code"), iso_currency],
        metadata={"description": "ISO 4217 code", "example": "USD"},
    )
    paymentMethod = fields.String(
        required=True,
        validate=[
            validate.Length(max=255),
            pattern(
                r"pm_[A-Za-z0-9_]+",
                "must be a Stripe PaymentMethod id (pm_...); card details are never accepted",
            ),
        ],
        metadata={"description": "Stripe PaymentMethod id", "example": "pm_card_visa"},
    )
    rideId = identifier("The ride being paid for")
    receiptEmail = fields.Email(
        validate=validate.Length(max=254),
        metadata={"description": "Where the receipt is emailed once the charge succeeds"},
    )


class PaymentAcceptedSchema(Schema):
    message = fields.String()
    jobId = fields.String()
    paymentId = fields.Integer()


class PaymentSchema(Schema):
    id = fields.Integer()
    rideId = fields.Integer(attribute="ride_id")
    # A JSON number, as the document says (Flask would write a Decimal as a string).
    amount = fields.Float(metadata={"description": "In major units, at most 2 decimals (25.5)"})
    currency = fields.String()
    status = fields.String(metadata={"description": "pending, processing, succeeded or failed"})
    jobId = fields.String(attribute="job_id")
    paymentIntentId = fields.String(attribute="stripe_payment_intent_id", allow_none=True)
    failureReason = fields.String(attribute="failure_reason", allow_none=True)
    receiptNumber = fields.Function(lambda p: p.receipt.number if p.receipt else None)
    createdAt = fields.DateTime(attribute="created_at")


class PaymentJobSchema(Schema):
    """The data of a payment job: the payment row to charge, and for a retry, a new method."""

    paymentId = identifier("The payment row to charge")
    paymentMethod = fields.String(
        validate=[validate.Length(max=255), pattern(r"pm_[A-Za-z0-9_]+", "must be a Stripe PaymentMethod id (pm_...)")],
        metadata={"description": "Retry only: charge this PaymentMethod instead"},
    )
