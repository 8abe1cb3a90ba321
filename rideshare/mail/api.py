"""POST /send-welcome-email."""

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from markupsafe import escape

from rideshare.auth import current_user, login_optional
from rideshare.jobs import add_email_job
from rideshare.jobs.schemas import JobAcceptedSchema
from rideshare.mail.schemas import WelcomeEmailSchema
from rideshare.ratelimit import job_limits

blp = Blueprint("mail", __name__, description="Email")


@blp.route("/send-welcome-email")
class WelcomeEmail(MethodView):
    decorators = [*job_limits, login_optional]

    @blp.arguments(WelcomeEmailSchema)
    @blp.response(202, JobAcceptedSchema)
    @blp.alt_response(503, description="The job could not be queued")
    def post(self, body: dict[str, Any]) -> dict[str, str]:
        """Queue a welcome email; with a token, the caller can then read the job."""
        name = body["name"]
        user = current_user()
        job = add_email_job(
            {
                "to": body["email"],
                "subject": f"Welcome {name}!",
                "text": f"Hi {name}, welcome to our ride-sharing service!",
                "html": f"<h1>Welcome {escape(name)}!</h1><p>Welcome to our ride-sharing service!</p>",
            },
            delay=1000,
            owner=user.id if user else None,
        )
        return {"message": "Welcome email queued successfully", "jobId": job.id}
