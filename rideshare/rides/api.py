"""POST /rides, POST /rides/<id>/complete, POST /rides/<id>/cancel and POST /rides/<id>/settle."""

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema

from rideshare.audit import audit
from rideshare.auth import current_user, login_required
from rideshare.jobs.schemas import JobAcceptedSchema
from rideshare.payments.hooks import is_transient_gateway_error
from rideshare.payments.service import PaymentCharged
from rideshare.ratelimit import job_limits
from rideshare.rides import service as rides
from rideshare.rides import settlement
from rideshare.rides.models import Ride
from rideshare.rides.schemas import (
    RideCancellationSchema,
    RideCancelSchema,
    RideCompleteSchema,
    RideCreateSchema,
    RideSchema,
    RideSettleSchema,
    SettlementAcceptedSchema,
)

blp = Blueprint("rides", __name__, description="Rides")


@blp.route("/rides")
class Rides(MethodView):
    decorators = [login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.arguments(RideCreateSchema)
    @blp.response(201, RideSchema)
    def post(self, body: dict[str, Any]) -> Ride:
        """Request a ride."""
        return rides.request_ride(
            body["riderId"], body["driverId"], body["pickup"], body["dropoff"], driver_email=body.get("driverEmail")
        )


@blp.route("/rides/<int(max=2147483647):ride_id>/complete")
class CompleteRide(MethodView):
    decorators = [*job_limits, login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.arguments(RideCompleteSchema)
    @blp.response(200, JobAcceptedSchema)
    @blp.alt_response(404, description="No such ride")
    @blp.alt_response(409, description="The ride is already completed")
    def post(self, body: dict[str, Any], ride_id: int) -> dict[str, str]:
        """Complete a ride and queue its analytics event."""
        user = current_user()
        try:
            done = rides.complete_ride(
                ride_id,
                user_id=user.id,
                is_admin=user.is_admin,
                driver_id=body["driverId"],
                fare=body["fare"],
                distance=body["distance"],
                duration=body["duration"],
            )
        except rides.RideNotFound:
            abort(404, message=f"ride {ride_id} not found")
        except rides.NotTheDriver:
            abort(422, errors={"json": {"driverId": ["is not this ride's driver"]}})
        except rides.AlreadyCompleted:
            abort(409, message=f"ride {ride_id} is already completed")
        return {"message": "Ride completed successfully", "jobId": done.job_id}


@blp.route("/rides/<int(max=2147483647):ride_id>/cancel")
class CancelRide(MethodView):
    decorators = [login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.arguments(RideCancelSchema)
    @blp.response(200, RideCancellationSchema)
    @blp.alt_response(403, schema=ErrorSchema, description="The caller is the ride's driver, not its rider")
    @blp.alt_response(404, schema=ErrorSchema, description="No such ride, or not the caller's")
    @blp.alt_response(
        409,
        schema=ErrorSchema,
        description="The ride is completed, or one of its payments was charged (or is being charged): nothing changed",
    )
    @blp.alt_response(503, schema=ErrorSchema, description="The payment gateway did not answer: nothing changed")
    def post(self, body: dict[str, Any], ride_id: int) -> dict[str, Any]:
        """Cancel a ride with its payments that were not charged, and their jobs (its rider, or an admin)."""
        user = current_user()
        try:
            done = rides.cancel_ride(ride_id, user_id=user.id, is_admin=user.is_admin, reason=body.get("reason"))
        except rides.RideNotFound:
            abort(404, message=f"ride {ride_id} not found")
        except rides.NotTheRider:
            abort(403, message=f"only the rider of ride {ride_id} (or an admin) may cancel it")
        except rides.AlreadyCompleted:
            abort(409, message=f"ride {ride_id} is completed; it cannot be cancelled")
        except PaymentCharged as exc:
            state = "already succeeded" if exc.status == "succeeded" else f"is {exc.status} at the payment gateway"
            abort(
                409,
                message=f"payment {exc.payment_id} of ride {ride_id} {state}: it was not touched, "
                "and the ride was not cancelled",
            )
        except Exception as exc:
            if not is_transient_gateway_error(exc):
                raise
            abort(503, message="the payment gateway did not answer; nothing was cancelled, try again")
        if user.is_admin:
            audit(
                user.id,
                "ride.cancel",
                f"ride:{ride_id}",
                reason=body.get("reason"),
                payments=[
                    {"paymentId": p.payment_id, "status": p.status, "jobState": p.job_state} for p in done.payments
                ],
            )
        return {"message": "Ride cancelled", **vars(done)}


@blp.route("/rides/<int(max=2147483647):ride_id>/settle")
class SettleRide(MethodView):
    decorators = [*job_limits, login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.arguments(RideSettleSchema)
    @blp.response(202, SettlementAcceptedSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such ride, or not the caller's")
    @blp.alt_response(409, schema=ErrorSchema, description="The ride is not completed")
    @blp.alt_response(503, description="The flow could not be queued: ask again (the same flow is made once)")
    def post(self, body: dict[str, Any], ride_id: int) -> settlement.Settlement:
        """Settle a completed ride: charge its fare, then email the receipt and record the event, then
        mark it settled (a flow of jobs). Asked again, it returns the same flow."""
        user = current_user()
        try:
            return settlement.settle(
                ride_id,
                user_id=user.id,
                is_admin=user.is_admin,
                payment_method=body["paymentMethod"],
                receipt_email=body.get("receiptEmail"),
                currency=body["currency"],
            )
        except settlement.RideNotFound:
            abort(404, message=f"ride {ride_id} not found")
        except settlement.NotCompleted as exc:
            abort(409, message=str(exc))
