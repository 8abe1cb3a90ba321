"""GET /jobs/<id>: a job's state, attempts and result."""

from flask.views import MethodView
from flask_smorest import Blueprint, abort

from jobqueue import Job
from rideshare.auth import current_user, login_required
from rideshare.jobs import get_job
from rideshare.jobs.schemas import JobSchema

blp = Blueprint("jobs", __name__, description="Job state by id")


@blp.route("/jobs/<string:job_id>")
class JobResource(MethodView):
    decorators = [login_required]

    @blp.doc(security=[{"bearerAuth": []}])
    @blp.response(200, JobSchema)
    def get(self, job_id: str) -> Job:
        """A job's state, attempts, result and failure reason."""
        job = get_job(job_id)
        user = current_user()
        # Another user's job reads as missing: its existence is not theirs to learn.
        if job is None or not (user.is_admin or job.owner == user.id):
            abort(404, message=f"job {job_id} not found")
        return job
