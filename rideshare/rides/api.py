"""POST /rides and POST /rides/<id>/complete."""

import secrets
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import update

from jobqueue import QueueUnavailable
from rideshare.analytics.service import RIDE_COMPLETED
from rideshare.auth import current_user, login_required
from rideshare.db import get_db, utcnow
from rideshare.jobs import publish_job, stage_job, withdraw_job
from rideshare.jobs.schemas import JobAcceptedSchema
from rideshare.ratelimit import job_limits
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
        ride = Ride(
            rider_id=body["riderId"],
            driver_id=body["driverId"],
            pickup=body["pickup"],
            dropoff=body["dropoff"],
        )
        with get_db().session() as session:
            session.add(ride)
        return ride


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
        db = get_db()
        completed_at = utcnow()
        with db.session() as session:
            ride = session.get(Ride, ride_id)
            user = current_user()
            # Only the ride's rider or driver (or an admin) may complete it; to anyone
            # else it does not exist.
            if ride is None or not (user.is_admin or user.id in (ride.rider_id, ride.driver_id)):
                abort(404, message=f"ride {ride_id} not found")
            if body["driverId"] != ride.driver_id:
                abort(422, errors={"json": {"driverId": ["is not this ride's driver"]}})
            # A conditional UPDATE, so two concurrent completions cannot both win.
            won = session.execute(
                update(Ride)
                .where(Ride.id == ride_id, Ride.status == "requested")
                .values(
                    status="completed",
                    fare=body["fare"],
                    distance_km=body["distance"],
                    duration_s=body["duration"],
                    completed_at=completed_at,
                )
            ).rowcount
            if not won:
                abort(409, message=f"ride {ride_id} is already completed")
            event_id = f"ride-completed-{ride_id}"
            # Staged in the completion's transaction: the ride is completed with its event or not at all.
            staged = stage_job(
                session,
                "analytics",
                {
                    "event": RIDE_COMPLETED,
                    "eventId": event_id,
                    "rideId": ride_id,
                    "userId": ride.rider_id,
                    "driverId": body["driverId"],
                    "occurredAt": completed_at.isoformat(),
                    "data": {
                        "fare": str(body["fare"]),
                        "distance": body["distance"],
                        "duration": body["duration"],
                    },
                },
                # Unique beyond this database's ids; the event id is what analytics dedupes on.
                job_id=f"{event_id}-{secrets.token_hex(4)}",
                owner=user.id,
            )
        try:
            publish_job(staged)
        except QueueUnavailable:
            # Undo, so the client can complete the ride again once the broker is back
            # (unless a relay queued the event meanwhile: then the completion stands).
            with db.session() as session:
                undone = withdraw_job(session, staged.job_id)
                if undone:
                    session.execute(
                        update(Ride)
                        .where(Ride.id == ride_id)
                        .values(status="requested", fare=None, distance_km=None, duration_s=None, completed_at=None)
                    )
            if undone:
                raise
        return {"message": "Ride completed successfully", "jobId": staged.job_id}
