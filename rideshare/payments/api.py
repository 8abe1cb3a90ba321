"""POST /payments, GET /payments/<id>, and an admin's POST /admin/payments/<id>/refund."""

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema
from sqlalchemy.orm import selectinload

from rideshare.audit import audit
from rideshare.auth import admin_required, current_user, login_required
from rideshare.db import get_db
from rideshare.payments.models import Payment
from rideshare.payments.schemas import PaymentAcceptedSchema, PaymentCreateSchema, PaymentSchema, RefundAcceptedSchema
from rideshare.payments.service import (
    IdempotencyConflict,
    IdempotencyInProgress,
    NotCharged,
    UnknownRide,
    create_payment,
    request_fingerprint,
    request_refund,
)
from rideshare.ratelimit import job_limits

blp = Blueprint("payments", __name__, description="Payments")
# Longer keys are refused (400) before any lookup; gunicorn lets headers up to 16 KiB reach the app.
MAX_IDEMPOTENCY_KEY = 255


@blp.route("/payments")
class Payments(MethodView):
    decorators = [*job_limits, login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.arguments(PaymentCreateSchema)
    @blp.response(202, PaymentAcceptedSchema)
    @blp.alt_response(
        400, schema=ErrorSchema, description="Idempotency-Key longer than 255 characters, or a hostile JSON body"
    )
    @blp.alt_response(409, schema=ErrorSchema, description="A request with this Idempotency-Key is still in progress")
    @blp.alt_response(
        422,
        schema=ErrorSchema,
        description="Invalid fields; or a rideId that does not exist or is not the caller's; "
        "or an Idempotency-Key used before with another body",
    )
    @blp.alt_response(503, description="The job could not be queued; nothing was stored")
    @blp.doc(
        parameters=[
            {
                "in": "header",
                "name": "Idempotency-Key",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
                "description": "Repeat a request safely: the same key and body return the first response",
            }
        ]
    )
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Queue a payment for a ride; the payment worker charges it through Stripe."""
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY):
            message = f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
            abort(400, message=message, errors={"headers": {"Idempotency-Key": [message]}})
        try:
            payment, _ = create_payment(
                idempotency=(key, request_fingerprint(body)) if key else None,
                user_id=current_user().id,
                ride_id=body["rideId"],
                amount=body["amount"],
                currency=body["currency"],
                payment_method=body["paymentMethod"],
                receipt_email=body.get("receiptEmail"),
                payer_must_be_rider=not current_user().is_admin,
            )
        except IdempotencyConflict:
            abort(
                422,
                errors={"headers": {"Idempotency-Key": ["was used before with a different request body"]}},
            )
        except IdempotencyInProgress:
            abort(409, message="a request with this Idempotency-Key is still in progress", headers={"Retry-After": "1"})
        except UnknownRide:
            abort(422, errors={"json": {"rideId": [f"ride {body['rideId']} does not exist or is not yours"]}})
        return {"message": "Payment queued successfully", "jobId": payment.job_id, "paymentId": payment.id}


@blp.route("/payments/<int(max=2147483647):payment_id>")
class PaymentResource(MethodView):
    decorators = [login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.response(200, PaymentSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such payment, or not the caller's")
    def get(self, payment_id: int) -> Payment:
        """A payment's status, Stripe PaymentIntent and receipt number."""
        with get_db().session() as session:
            payment = session.get(Payment, payment_id, options=[selectinload(Payment.receipt)])
        user = current_user()
        if payment is None or not (user.is_admin or payment.user_id == user.id):
            abort(404, message=f"payment {payment_id} not found")
        return payment


@blp.route("/admin/payments/<int(max=2147483647):payment_id>/refund")
class RefundPayment(MethodView):
    decorators = [*job_limits, admin_required]

    @blp.doc(
        security=[{"bearerAuth": []}],
        responses={"401": {"description": "No valid token"}, "403": {"description": "Not an admin"}},
    )
    @blp.response(202, RefundAcceptedSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such payment")
    @blp.alt_response(409, schema=ErrorSchema, description="The payment was never charged: nothing to refund")
    @blp.alt_response(503, description="The job could not be queued; nothing was stored")
    def post(self, payment_id: int) -> dict[str, Any]:
        """Refund a charged payment in full, once: asked again, it answers with the same refund job."""
        actor = f"user:{current_user().id}"
        try:
            asked = request_refund(payment_id)
        except LookupError:
            abort(404, message=f"payment {payment_id} not found")
        except NotCharged as exc:
            audit(actor, "payment.refund", f"payment:{payment_id}", refused=str(exc))
            abort(409, message=f"{exc}: nothing to refund")
        state = asked.job.state if asked.job is not None else ("staged" if asked.created else "removed")
        audit(actor, "payment.refund", f"payment:{payment_id}", jobId=asked.job_id, created=asked.created, state=state)
        return {
            "message": "Refund queued" if asked.created else "The payment's refund was asked for before",
            "paymentId": payment_id,
            "jobId": asked.job_id,
            "state": state,
            "created": asked.created,
            "paymentStatus": asked.payment_status,
        }
