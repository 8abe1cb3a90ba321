"""Payment request and response bodies."""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from rideshare.currencies import ISO_4217
from rideshare.validation import MAX_ID, email_address, identifier, money, pattern

# What a payment job does with its payment (data field action; charge without it); reconcile
# names no payment: it settles the payments left pending or processing (rideshare.payments.reconcile).
CHARGE, REFUND, RECONCILE = "charge", "refund", "reconcile"
PAYMENT_ACTIONS = (CHARGE, REFUND, RECONCILE)
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
    """The data of a payment job: the payment row to charge (or refund), and for a retry, a new method;
    or action reconcile alone."""

    # Required by every action but reconcile (_names_its_payment).
    paymentId = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_ID),
        metadata={"description": "The payment row to charge or refund (every action but reconcile)"},
    )
    action = fields.String(
        validate=validate.OneOf(PAYMENT_ACTIONS),
        metadata={
            "description": "charge (without it, the job charges), refund (in full, once charged), or reconcile "
            "(no paymentId: settle the payments left pending or processing, asking Stripe)"
        },
    )
    paymentMethod = fields.String(
        validate=[validate.Length(max=255), pattern(r"pm_[A-Za-z0-9_]+", "must be a Stripe PaymentMethod id (pm_...)")],
        metadata={"description": "Retry only: charge this PaymentMethod instead"},
    )

    @validates_schema
    def _names_its_payment(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("action") == RECONCILE:
            if set(data) - {"action"}:
                raise ValidationError("a reconcile job takes no other field", sorted(set(data) - {"action"})[0])
        elif "paymentId" not in data:
            raise ValidationError("Missing data for required field.", "paymentId")

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
