"""Each queue's declared policy (beside its domain), and how a failure is described."""

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
from jobqueue import Backoff, JobOptions, JobTimeout, PermanentJobError, QueuePolicy, TransientJobError
from jobqueue.task import JobTask, describe
from rideshare.analytics.queue import ANALYTICS_QUEUE
from rideshare.celery_app import task_queues_and_routes
from rideshare.mail.queue import EMAIL_QUEUE
from rideshare.payments.queue import PAYMENT_QUEUE
from rideshare.queues import POLICIES

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"JOB_RETRY_ATTEMPTS": 3, "JOB_RETRY_DELAY": 5000, "JOB_TIMEOUT": 30000}


@pytest.fixture(scope="module")
def registry() -> Iterator[Celery]:
    """The shared tasks, bound to a Celery app of our own (it never connects)."""
    app = Celery("unit", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(task_queues_and_routes(POLICIES, "redis://127.0.0.1:6379/0"))
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
    # The routes are derived from the policies.
    assert registry.amqp.router.route({}, name)["queue"].name == queue


def test_each_task_runs_its_declared_policy(registry):
    assert registry.tasks["payment.charge"].policy is PAYMENT_QUEUE
    assert registry.tasks["email.send"].policy is EMAIL_QUEUE
    assert registry.tasks["analytics.record"].policy is ANALYTICS_QUEUE


def test_payment_policy():
    assert PAYMENT_QUEUE.attempts == 5
    assert PAYMENT_QUEUE.backoff == Backoff("exponential", 5000)
    for error in (
        stripe.APIConnectionError("down"),
        stripe.APIError("5xx"),
        stripe.RateLimitError("slow down"),
        OperationalError("", {}, None),
    ):
        assert PAYMENT_QUEUE.is_retryable(error), error
    # A decline is permanent, and so is anything the job says is permanent.
    assert not PAYMENT_QUEUE.is_retryable(stripe.CardError("declined", param=None, code="card_declined"))
    assert not PAYMENT_QUEUE.is_retryable(PermanentJobError("no"))
    assert not PAYMENT_QUEUE.is_retryable(ValueError("bug"))
    assert PAYMENT_QUEUE.defaults(3, 5000, 30000) == JobOptions(
        attempts=5, backoff=Backoff("exponential", 5000), timeout=30000
    )


def test_email_policy():
    assert EMAIL_QUEUE.attempts == 3
    assert EMAIL_QUEUE.backoff == Backoff("exponential", 2000)
    assert EMAIL_QUEUE.is_retryable(smtplib.SMTPServerDisconnected())
    assert EMAIL_QUEUE.is_retryable(TransientJobError("451 later"))
    assert not EMAIL_QUEUE.is_retryable(smtplib.SMTPRecipientsRefused({}))
    assert EMAIL_QUEUE.defaults(3, 5000, 30000) == JobOptions(
        attempts=3, backoff=Backoff("exponential", 2000), timeout=30000
    )


def test_analytics_policy_comes_from_the_app_config():
    assert ANALYTICS_QUEUE.attempts is None
    assert ANALYTICS_QUEUE.backoff == Backoff("exponential", None)
    assert ANALYTICS_QUEUE.is_retryable(OperationalError("", {}, None))
    assert ANALYTICS_QUEUE.defaults(3, 5000, 30000) == JobOptions(
        attempts=3, backoff=Backoff("exponential", 5000), timeout=30000
    )
    assert ANALYTICS_QUEUE.defaults(8, 100, 900) == JobOptions(
        attempts=8, backoff=Backoff("exponential", 100), timeout=900
    )


def test_a_policy_retries_only_timeouts_and_transient_errors_by_default():
    bare = QueuePolicy(name="q", task="q.run")
    assert bare.is_retryable(TransientJobError()) and bare.is_retryable(JobTimeout())
    assert not bare.is_retryable(OperationalError("", {}, None))


def test_enqueueing_imports_neither_the_tasks_nor_stripe():
    code = (
        "import sys\n"
        "from rideshare import create_app\n"
        "create_app({'TESTING': True})\n"
        "print([m for m in ('stripe', 'tasks.payment', 'tasks.email', 'tasks.analytics') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


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


def test_hooks_and_retry_rules_are_callables_checked_when_declared():
    for policy in (PAYMENT_QUEUE, EMAIL_QUEUE, ANALYTICS_QUEUE):
        for name in ("on_final_failure", "on_manual_retry"):
            hook = getattr(policy, name)
            assert hook is None or callable(hook), (policy.name, name)
    assert PAYMENT_QUEUE.on_final_failure.__module__ == "rideshare.payments.hooks"
    with pytest.raises(TypeError, match="retry_on"):
        QueuePolicy(name="q", task="q.run", retry_on=("shop.gateway:ERRORS",))
    with pytest.raises(TypeError, match="on_final_failure"):
        QueuePolicy(name="q", task="q.run", on_final_failure="shop.payments:failed")
    # A predicate decides too; it is asked only when no class matched.
    seen: list[BaseException] = []
    policy = QueuePolicy(name="q", task="q.run", retry_on=(lambda exc: seen.append(exc) or "429" in str(exc),))
    assert policy.is_retryable(RuntimeError("HTTP 429")) and not policy.is_retryable(RuntimeError("HTTP 400"))
    assert not policy.is_retryable(PermanentJobError("429"))  # permanent wins, the predicate is not asked
    assert len(seen) == 2
