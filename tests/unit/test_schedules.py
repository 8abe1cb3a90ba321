"""A schedule's ticks (jobqueue.schedules.Spec, plan): cron across daylight-saving changes,
every_ms at fixed multiples, and what a scheduler fires after missed ticks."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from jobqueue.schedules import InvalidSchedule, Spec, check_schedule_id, job_id_for, plan

NEW_YORK = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, zone: ZoneInfo = UTC, fold: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold).timestamp() * 1000)


def ticks(spec: Spec, start: int, count: int) -> list[int]:
    out = [spec.next_after(start)]
    while len(out) < count:
        out.append(spec.next_after(out[-1]))
    return out


def utc(at: int) -> str:
    return datetime.fromtimestamp(at / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def test_cron_in_new_york_across_spring_forward():
    """02:30 does not exist on 2026-03-08 (02:00 EST jumps to 03:00 EDT): that day's tick is
    03:00 EDT (croniter's choice), and the days around it keep 02:30 local, an hour apart in UTC."""
    spec = Spec.parse(cron="30 2 * * *", tz="America/New_York")
    got = ticks(spec, ms(2026, 3, 6, 12, zone=NEW_YORK), 4)
    assert [utc(t) for t in got] == [
        "2026-03-07 07:30",  # 02:30 EST (UTC-5)
        "2026-03-08 07:00",  # 03:00 EDT: 02:30 was skipped by the clock
        "2026-03-09 06:30",  # 02:30 EDT (UTC-4)
        "2026-03-10 06:30",
    ]


def test_cron_in_new_york_across_fall_back():
    """On 2026-11-01 01:00-02:00 happens twice: a tick at a named hour inside it fires once, the
    first time (EDT); 02:30 is after the change and stays 02:30 local (EST from then on)."""
    once = Spec.parse(cron="30 1 * * *", tz="America/New_York")
    assert [utc(t) for t in ticks(once, ms(2026, 10, 31, 12, zone=NEW_YORK), 3)] == [
        "2026-11-01 05:30",  # 01:30 EDT; not again at 01:30 EST (06:30 UTC)
        "2026-11-02 06:30",
        "2026-11-03 06:30",
    ]
    after = Spec.parse(cron="30 2 * * *", tz="America/New_York")
    assert [utc(t) for t in ticks(after, ms(2026, 10, 31, 12, zone=NEW_YORK), 3)] == [
        "2026-11-01 07:30",  # 02:30 EST
        "2026-11-02 07:30",
        "2026-11-03 07:30",
    ]


def test_cron_with_every_hour_runs_by_the_clock_through_the_repeated_hour():
    hourly = Spec.parse(cron="15 * * * *", tz="America/New_York")
    got = ticks(hourly, ms(2026, 11, 1, 4, 0), 4)  # 00:00 EDT
    assert [utc(t) for t in got] == ["2026-11-01 04:15", "2026-11-01 05:15", "2026-11-01 06:15", "2026-11-01 07:15"]


def test_latest_at_or_before_is_the_inverse_of_next_after():
    spec = Spec.parse(cron="30 2 * * *", tz="America/New_York")
    for tick in ticks(spec, ms(2026, 3, 1), 12) + ticks(spec, ms(2026, 10, 28), 8):
        assert spec.latest_at_or_before(tick) == tick
        assert spec.latest_at_or_before(tick - 1) < tick
        assert spec.next_after(spec.latest_at_or_before(tick - 1)) == tick


def test_every_ms_ticks_at_fixed_multiples():
    spec = Spec.parse(every_ms=2000)
    assert spec.next_after(1_000_000_000_001) == 1_000_000_002_000
    assert spec.next_after(1_000_000_002_000) == 1_000_000_004_000  # strictly after
    assert spec.latest_at_or_before(1_000_000_003_999) == 1_000_000_002_000
    # Two schedulers that read the clock at different times compute the same ticks.
    assert ticks(spec, 1_000_000_000_001, 3) == ticks(spec, 1_000_000_001_999, 3)
    assert all(t % 2000 == 0 for t in ticks(Spec.parse(every_ms=2000), 1_234_567, 50))


def test_on_time_fires_the_due_tick():
    spec = Spec.parse(every_ms=1000)
    step = plan(spec, due=10_000, now=10_400, missed="skip")
    assert (step.tick, step.next, step.skipped) == (10_000, 11_000, [])


def test_missed_ticks_run_once_fires_the_latest_only():
    spec = Spec.parse(every_ms=1000)
    step = plan(spec, due=10_000, now=15_300, missed="run_once")
    assert step.tick == 15_000
    assert step.skipped == [10_000, 11_000, 12_000, 13_000, 14_000]
    assert step.next == 16_000


def test_missed_ticks_skip_fires_none():
    spec = Spec.parse(every_ms=1000)
    step = plan(spec, due=10_000, now=15_300, missed="skip")
    assert step.tick is None
    assert step.skipped == [10_000, 11_000, 12_000, 13_000, 14_000, 15_000]
    assert step.next == 16_000


def test_a_late_tick_is_not_missed_until_the_next_one_is_due():
    spec = Spec.parse(cron="0 3 * * *", tz="Europe/Paris")
    due = ms(2026, 6, 1, 1)  # 03:00 CEST
    assert plan(spec, due, due + 23 * 3_600_000, "skip").tick == due


def test_missed_cron_ticks_are_found_across_a_long_outage():
    spec = Spec.parse(cron="*/10 * * * *", tz="UTC")
    due = ms(2026, 1, 1, 0, 0)
    step = plan(spec, due, ms(2026, 1, 3, 0, 5), "run_once")  # two days down
    assert step.tick == ms(2026, 1, 3, 0, 0)
    assert step.next == ms(2026, 1, 3, 0, 10)
    assert len(step.skipped) == 100  # the history keeps the last 100


@pytest.mark.parametrize(
    ("kwargs", "fields"),
    [
        ({}, {"cron"}),
        ({"every_ms": 1000, "cron": "* * * * *"}, {"everyMs"}),
        ({"every_ms": 999}, {"everyMs"}),
        ({"every_ms": True}, {"everyMs"}),
        ({"cron": "* * * *"}, {"cron"}),
        ({"cron": "*/5 * * * * *"}, {"cron"}),  # 6 fields: seconds are every_ms's job
        ({"cron": "61 * * * *"}, {"cron"}),
        ({"cron": "0 3 * * *", "tz": "Mars/Olympus"}, {"tz"}),
        ({"every_ms": 2000, "tz": "Europe/Paris"}, {"tz"}),
    ],
)
def test_bad_specs_name_their_fields(kwargs, fields):
    with pytest.raises(InvalidSchedule) as caught:
        Spec.parse(**kwargs)
    assert set(caught.value.errors) == fields


def test_ids():
    assert check_schedule_id("nightly-payouts.v2") == "nightly-payouts.v2"
    for bad in ("", "-x", "a b", "x" * 41, "a:b", 3):
        with pytest.raises(InvalidSchedule):
            check_schedule_id(bad)
    assert len(job_id_for("x" * 40, ms(2286, 11, 20))) <= 64


def test_tick_of_reads_a_schedule_jobs_tick_and_nothing_else():
    from jobqueue.schedules import tick_of

    assert tick_of(job_id_for("payout-summary", 1_767_236_400_000)) == 1_767_236_400_000
    assert tick_of("payment-abc") is None
    assert tick_of("sched:odd") is None
