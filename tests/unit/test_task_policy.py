"""Each queue's declared retry policy, and how a failure is described."""

import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

import tasks.analytics
import tasks.email
import tasks.payment
from rideshare.jobs.options import Backoff, JobOptions
from rideshare.jobs.task import JobTask, PermanentJobError, TransientJobError, describe

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"JOB_RETRY_ATTEMPTS": 3, "JOB_RETRY_DELAY": 5000, "JOB_TIMEOUT": 30000}


@pytest.fixture(scope="module")
def registry() -> Iterator[Celery]:
    """The shared tasks, bound to a Celery app of our own (it never connects)."""
    app = Celery("unit", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.finalize()  # binds every shared_task, ours included
    try:
        yield app
    finally:
        app.close()


def test_importing_the_task_modules_builds_no_app():
    code = (
        "import sys, tasks.email, tasks.analytics, tasks.payment\n"
        "assert 'app' not in vars(sys.modules['tasks']), 'tasks.app was built'\n"
        "from celery import _state\n"
        "assert _state.default_app is None, 'a Celery app was made the default'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_task_functions_are_shared_task_proxies():
    for proxy, name in [
        (tasks.payment.charge_payment_task, "payment.charge"),
        (tasks.email.send_email_task, "email.send"),
        (tasks.analytics.record_event_task, "analytics.record"),
    ]:
        assert type(proxy).__module__ == "celery.local"
        assert proxy.name == name


@pytest.mark.parametrize(
    ("name", "queue"), [("payment.charge", "payment"), ("email.send", "email"), ("analytics.record", "analytics")]
)
def test_each_task_is_a_job_task_on_its_own_queue(registry, name, queue):
    task = registry.tasks[name]
    assert isinstance(task, JobTask)
    assert task.queue == queue
    # The name's prefix is what celeryconfig.task_routes routes on.
    assert registry.amqp.router.route({}, name)["queue"].name == queue


def test_payment_policy(registry):
    task = registry.tasks["payment.charge"]
    assert task.attempts == 5
    assert task.backoff == Backoff("exponential", 5000)
    for error in (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError, OperationalError):
        assert error in task.retry_on, error
    assert stripe.CardError not in task.retry_on
    # Nor anything a card decline is an instance of.
    decline = stripe.CardError("declined", param=None, code="card_declined")
    assert not isinstance(decline, task.retry_on)
    assert task.default_options(CONFIG) == JobOptions(attempts=5, backoff=Backoff("exponential", 5000), timeout=30000)


def test_email_policy(registry):
    task = registry.tasks["email.send"]
    assert task.attempts == 3
    assert task.backoff == Backoff("exponential", 2000)
    assert smtplib.SMTPServerDisconnected in task.retry_on
    assert task.default_options(CONFIG) == JobOptions(attempts=3, backoff=Backoff("exponential", 2000), timeout=30000)


def test_analytics_policy_comes_from_the_app_config(registry):
    task = registry.tasks["analytics.record"]
    assert task.attempts is None
    assert task.backoff == Backoff("exponential", None)
    assert OperationalError in task.retry_on
    assert task.default_options(CONFIG) == JobOptions(attempts=3, backoff=Backoff("exponential", 5000), timeout=30000)
    custom = {"JOB_RETRY_ATTEMPTS": 8, "JOB_RETRY_DELAY": 100, "JOB_TIMEOUT": 900}
    assert task.default_options(custom) == JobOptions(attempts=8, backoff=Backoff("exponential", 100), timeout=900)


def test_job_task_defaults_retry_nothing():
    assert JobTask.attempts is None
    assert JobTask.retry_on == ()


# --- describe ------------------------------------------------------------------


def test_soft_time_limit_is_a_timeout():
    reason = describe(SoftTimeLimitExceeded())
    assert reason.startswith("timeout")
    assert reason == "timeout: job ran past its time limit"


@pytest.mark.parametrize("error", [PermanentJobError, TransientJobError])
def test_job_errors_are_described_by_their_message(error):
    assert describe(error("card_declined: insufficient_funds")) == "card_declined: insufficient_funds"


def test_other_errors_carry_their_class_name():
    assert describe(ValueError("bad input")) == "ValueError: bad input"
    assert describe(KeyError("paymentId")) == "KeyError: 'paymentId'"
    assert describe(RuntimeError()) == "RuntimeError: RuntimeError"
    assert describe(PermanentJobError()) == "PermanentJobError: PermanentJobError"


def test_reasons_are_at_most_500_characters():
    assert len(describe(ValueError("x" * 2000))) == 500
    assert describe(PermanentJobError("y" * 2000)) == "y" * 500
