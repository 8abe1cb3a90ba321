"""The shipped schedules' settings and the payout summary's day (rideshare.jobs.shipped,
rideshare.analytics.payouts): no store, no worker."""

from datetime import UTC, date, datetime

import pytest

from jobqueue.schedules import job_id_for
from jobqueue.store import JobRecord
from rideshare.analytics.payouts import payout_day, payout_email_job_id
from rideshare.config import SettingsError, settings_from_env
from rideshare.jobs.shipped import shipped_schedules


def test_defaults_time_the_three_schedules():
    found = {s.id: (s.cron, s.tz, s.job["queue"]) for s in shipped_schedules(settings_from_env({}))}
    assert found == {
        "payout-summary": ("0 3 * * *", "UTC", "analytics"),
        "ride-expiry": ("*/5 * * * *", "UTC", "analytics"),
        "payment-recheck": ("*/5 * * * *", "UTC", "payment"),
    }


def test_a_bad_cron_or_zone_is_named_by_its_variable():
    config = settings_from_env({"PAYOUT_SUMMARY_CRON": "0 3 * *", "RIDE_EXPIRY_TZ": "Mars/Olympus"})
    with pytest.raises(SettingsError) as refused:
        shipped_schedules(config)
    assert sorted(refused.value.errors) == ["PAYOUT_SUMMARY_CRON", "RIDE_EXPIRY_TZ"]


def job(job_id: str, data: dict | None = None, created_at: int = 0) -> JobRecord:
    return JobRecord(job_id, "analytics", "analytics.record", "active", data or {}, {}, created_at=created_at)


def test_the_payout_day_is_the_day_before_the_tick_even_when_run_late():
    tick = int(datetime(2026, 3, 10, 3, 0, tzinfo=UTC).timestamp() * 1000)
    late = int(datetime(2026, 3, 11, 9, 0, tzinfo=UTC).timestamp() * 1000)
    assert payout_day(job(job_id_for("payout-summary", tick), created_at=late)) == date(2026, 3, 9)
    assert payout_day(job("by-hand", {"day": "2026-01-02"}, created_at=late)) == date(2026, 1, 2)
    assert payout_day(job("by-hand", created_at=late)) == date(2026, 3, 10)


def test_payout_email_ids_are_one_per_driver_and_day_and_fit_a_job_id():
    long_id = "d" * 64
    assert payout_email_job_id(date(2026, 3, 9), long_id) == payout_email_job_id(date(2026, 3, 9), long_id)
    assert payout_email_job_id(date(2026, 3, 9), long_id) != payout_email_job_id(date(2026, 3, 10), long_id)
    assert payout_email_job_id(date(2026, 3, 9), "a") != payout_email_job_id(date(2026, 3, 9), "b")
    assert len(payout_email_job_id(date(2026, 3, 9), long_id)) <= 64
