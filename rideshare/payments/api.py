"""POST /payments and GET /payments/<id>."""

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy.orm import selectinload

from rideshare.auth import current_user, login_required
from rideshare.db import get_db
from rideshare.payments.models import Payment
from rideshare.payments.schemas import PaymentAcceptedSchema, PaymentCreateSchema, PaymentSchema
from rideshare.payments.service import UnknownRide, create_payment

blp = Blueprint("payments", __name__, description="Payments")


@blp.route("/payments")
class Payments(MethodView):
    decorators = [login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.arguments(PaymentCreateSchema)
    @blp.response(202, PaymentAcceptedSchema)
    @blp.alt_response(503, description="The job could not be queued; nothing was stored")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Queue a payment for a ride; the payment worker charges it through Stripe."""
        try:
            payment, job = create_payment(
                user_id=current_user().id,
                ride_id=body["rideId"],
                amount=body["amount"],
                currency=body["currency"],
                payment_method=body["paymentMethod"],
                receipt_email=body.get("receiptEmail"),
                payer_must_be_rider=not current_user().is_admin,
            )
        except UnknownRide:
            abort(422, errors={"json": {"rideId": [f"ride {body['rideId']} does not exist or is not yours"]}})
        return {"message": "Payment queued successfully", "jobId": job.id, "paymentId": payment.id}


@blp.route("/payments/<int(max=2147483647):payment_id>")
class PaymentResource(MethodView):
    decorators = [login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.response(200, PaymentSchema)
    def get(self, payment_id: int) -> Payment:
        """A payment's status, Stripe PaymentIntent and receipt number."""
        with get_db().session() as session:
            payment = session.get(Payment, payment_id, options=[selectinload(Payment.receipt)])
        user = current_user()
        if payment is None or not (user.is_admin or payment.user_id == user.id):
            abort(404, message=f"payment {payment_id} not found")
        return payment
