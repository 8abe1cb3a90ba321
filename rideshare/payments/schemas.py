"""Payment request and response bodies."""

from marshmallow import Schema, fields, validate

from rideshare.currencies import ISO_4217
from rideshare.validation import email_address, identifier, money, pattern

# The codes ISO 4217 lists today, in upper or lower case; a OneOf, so the document lists them too.
CURRENCY_CODES = sorted(ISO_4217) + sorted(code.lower() for code in ISO_4217)


class PaymentCreateSchema(Schema):
    amount = money("Amount to charge, in major units (25.50)")
    currency = fields.String(
        load_default="USD",
        validate=validate.OneOf(CURRENCY_CODES, error="is not an ISO 4217 currency code"),
        metadata={"description": "ISO 4217 code, upper or lower case", "example": "USD"},
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
    receiptEmail = email_address("Where the receipt is emailed once the charge succeeds", required=False)


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
    status = fields.String(metadata={"description": "pending, processing, succeeded, failed or cancelled"})
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
