"""Payment request and response bodies."""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from rideshare.currencies import ISO_4217
from rideshare.validation import email_address, identifier, money, pattern

# What a payment job does with its payment (data field action; charge without it).
CHARGE, REFUND = "charge", "refund"
PAYMENT_ACTIONS = (CHARGE, REFUND)
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
    status = fields.String(metadata={"description": "pending, processing, succeeded, failed, cancelled or refunded"})
    jobId = fields.String(attribute="job_id")
    paymentIntentId = fields.String(attribute="stripe_payment_intent_id", allow_none=True)
    failureReason = fields.String(attribute="failure_reason", allow_none=True)
    receiptNumber = fields.Function(lambda p: p.receipt.number if p.receipt else None)
    createdAt = fields.DateTime(attribute="created_at")


class PaymentJobSchema(Schema):
    """The data of a payment job: the payment row to charge (or refund), and for a retry, a new method."""

    paymentId = identifier("The payment row to charge or refund")
    action = fields.String(
        validate=validate.OneOf(PAYMENT_ACTIONS),
        metadata={"description": "charge (without it, the job charges) or refund (in full, once charged)"},
    )
    paymentMethod = fields.String(
        validate=[validate.Length(max=255), pattern(r"pm_[A-Za-z0-9_]+", "must be a Stripe PaymentMethod id (pm_...)")],
        metadata={"description": "Retry only: charge this PaymentMethod instead"},
    )

    @validates_schema
    def _refund_names_no_method(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("action") == REFUND and "paymentMethod" in data:
            raise ValidationError("a refund goes back to the method that was charged", "paymentMethod")


class RefundAcceptedSchema(Schema):
    message = fields.String()
    paymentId = fields.Integer()
    jobId = fields.String(metadata={"description": "The payment's refund job: poll GET /jobs/<jobId>"})
    state = fields.String(metadata={"description": "The refund job's state now (staged: not in the job store yet)"})
    created = fields.Boolean(metadata={"description": "False: the refund was asked for before; this is that job"})
    paymentStatus = fields.String(metadata={"description": "succeeded until the refund is made, then refunded"})
