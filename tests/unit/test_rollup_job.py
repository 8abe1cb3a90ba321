"""The roll-up job's data is checked when it is added, as each field roll_up_day reads."""

import pytest

from rideshare.analytics.schemas import AnalyticsJobSchema


def rollup(**fields):
    return {"event": "daily_rollup", "eventId": "rollup-2026-12-07", "day": "2026-12-07", **fields}


def test_a_rollup_with_its_day_is_valid():
    assert AnalyticsJobSchema().validate(rollup(after="ride-completed-12")) == {}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"day": None}, "day"),
        ({"day": "yesterday"}, "day"),
        ({"day": "2026-02-30"}, "day"),
        ({"after": ""}, "after"),
        ({"after": "x" * 129}, "after"),
    ],
)
def test_a_rollup_without_a_real_day_is_refused(data, field):
    body = {k: v for k, v in rollup(**data).items() if v is not None}
    assert field in AnalyticsJobSchema().validate(body)


def test_an_event_needs_no_day():
    event = {"event": "ride_completed", "eventId": "ride-completed-12", "data": {"fare": "9.50"}}
    assert AnalyticsJobSchema().validate(event) == {}
