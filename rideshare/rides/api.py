"""POST /rides and POST /rides/<id>/complete."""

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort

from rideshare.auth import current_user, login_required
from rideshare.jobs.schemas import JobAcceptedSchema
from rideshare.ratelimit import job_limits
from rideshare.rides import service as rides
from rideshare.rides.models import Ride
from rideshare.rides.schemas import RideCompleteSchema, RideCreateSchema, RideSchema

blp = Blueprint("rides", __name__, description="Rides")


@blp.route("/rides")
class Rides(MethodView):
    decorators = [login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.arguments(RideCreateSchema)
    @blp.response(201, RideSchema)
    def post(self, body: dict[str, Any]) -> Ride:
        """Request a ride."""
        return rides.request_ride(body["riderId"], body["driverId"], body["pickup"], body["dropoff"])


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
