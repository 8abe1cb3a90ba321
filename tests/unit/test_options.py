"""Job options: backoff, per-call options over queue defaults, and retention."""

import pytest

from jobqueue.options import Backoff, InvalidJobOptions, JobOptions, resolve_options
from jobqueue.store import Retention

DEFAULTS = JobOptions(attempts=3, backoff=Backoff("exponential", 5000), timeout=30000)


# --- Backoff -------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "wait"), [(1, 2000), (2, 2000), (3, 2000)])
def test_fixed_backoff_waits_the_same_after_every_failure(failures, wait):
    assert Backoff("fixed", 2000).wait_ms(failures) == wait


@pytest.mark.parametrize(("failures", "wait"), [(1, 1000), (2, 2000), (3, 4000), (4, 8000)])
def test_exponential_backoff_doubles_after_each_failure(failures, wait):
    assert Backoff("exponential", 1000).wait_ms(failures) == wait


def test_exponential_backoff_before_any_failure_is_the_base_delay():
    assert Backoff("exponential", 1000).wait_ms(0) == 1000


def test_backoff_without_a_delay_waits_nothing():
    assert Backoff("exponential", None).wait_ms(3) == 0
    assert Backoff("fixed", None).wait_ms(1) == 0


def test_backoff_default_is_exponential_with_the_app_delay():
    assert Backoff() == Backoff("exponential", None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, Backoff("fixed", 0)),
        (1500, Backoff("fixed", 1500)),
        ({"type": "fixed", "delay": 300}, Backoff("fixed", 300)),
        ({"type": "exponential", "delay": 300}, Backoff("exponential", 300)),
        ({"delay": 300}, Backoff("exponential", 300)),
        ({"type": "fixed"}, Backoff("fixed", 0)),
        ({}, Backoff("exponential", 0)),
    ],
)
def test_backoff_parse(value, expected):
    assert Backoff.parse(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        True,
        False,
        1.5,
        "1000",
        None,
        [1000],
        {"type": "linear", "delay": 100},
        {"type": "fixed", "delay": -1},
        {"type": "fixed", "delay": 1.5},
        {"type": "fixed", "delay": "100"},
    ],
)
def test_backoff_parse_rejects(value):
    with pytest.raises(ValueError, match="exponential"):
        Backoff.parse(value)


def test_backoff_round_trips_through_a_dict():
    backoff = Backoff("fixed", 750)
    assert Backoff.parse(backoff.to_dict()) == backoff


# --- resolve_options -----------------------------------------------------------


def test_no_options_gives_the_queue_defaults():
    assert resolve_options(DEFAULTS, {}) == DEFAULTS


def test_none_means_not_given():
    assert resolve_options(DEFAULTS, {"delay": None, "attempts": None, "backoff": None}) == DEFAULTS


def test_given_options_override_the_defaults_and_the_rest_stay():
    opts = resolve_options(
        DEFAULTS,
        {
            "delay": 1000,
            "attempts": 5,
            "backoff": {"type": "fixed", "delay": 200},
            "priority": 0,
            "remove_on_complete": True,
            "remove_on_fail": {"age": 60, "count": 10},
        },
    )
    assert opts == JobOptions(
        delay=1000,
        attempts=5,
        backoff=Backoff("fixed", 200),
        timeout=30000,
        priority=0,
        remove_on_complete=True,
        remove_on_fail={"age": 60, "count": 10},
    )


@pytest.mark.parametrize("priority", [0, 9])
def test_priority_bounds_are_accepted(priority):
    assert resolve_options(DEFAULTS, {"priority": priority}).priority == priority


def test_every_bad_option_is_named():
    with pytest.raises(InvalidJobOptions) as caught:
        resolve_options(
            DEFAULTS,
            {
                "delay": -1,
                "attempts": 0,
                "priority": 10,
                "backoff": {"type": "linear", "delay": 100},
                "timeout": 0,
                "remove_on_fail": -3,
                "retries": 2,
            },
        )
    errors = caught.value.errors
    assert set(errors) == {"delay", "attempts", "priority", "backoff", "timeout", "remove_on_fail", "retries"}
    assert errors["retries"] == "unknown job option"
    assert "1 or more" in errors["attempts"]
    assert "0 (first) to 9 (last)" in errors["priority"]
    # The exception's message carries every one of them too.
    for name in errors:
        assert f"{name}:" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("delay", -1),
        ("delay", 1.5),
        ("delay", "100"),
        ("delay", True),
        ("attempts", 0),
        ("attempts", -2),
        ("attempts", 2.0),
        ("priority", 10),
        ("priority", -1),
        ("timeout", 0),
        ("timeout", -5),
        ("backoff", {"type": "linear"}),
        ("backoff", -100),
        ("remove_on_complete", "yes"),
        ("remove_on_fail", {"age": -1}),
        ("removeOnComplete", True),
    ],
)
def test_a_single_bad_option_is_named_alone(name, value):
    with pytest.raises(InvalidJobOptions) as caught:
        resolve_options(DEFAULTS, {name: value})
    assert list(caught.value.errors) == [name]


def test_invalid_job_options_is_a_value_error():
    assert issubclass(InvalidJobOptions, ValueError)


def test_job_options_round_trip_through_the_stored_dict():
    opts = resolve_options(DEFAULTS, {"delay": 10, "attempts": 4, "backoff": 250, "priority": 3})
    assert JobOptions.from_dict(opts.to_dict()) == opts


# --- Retention -----------------------------------------------------------------

KEEP_100 = Retention(count=100)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, KEEP_100),
        (True, Retention(count=0)),
        (False, Retention(count=-1, age_ms=-1)),
        (0, Retention(count=0)),
        (25, Retention(count=25)),
        ({"count": 5}, Retention(count=5, age_ms=-1)),
        ({"age": 60}, Retention(count=-1, age_ms=60_000)),
        ({"age": 3600, "count": 10}, Retention(count=10, age_ms=3_600_000)),
        ({"age": None, "count": 3}, Retention(count=3, age_ms=-1)),
    ],
)
def test_retention_parse(value, expected):
    assert Retention.parse(value, KEEP_100) == expected


@pytest.mark.parametrize(
    "value",
    [-1, "10", 1.5, {}, {"age": -1}, {"count": -2}, {"count": "5"}, {"age": 1.5}, {"keep": 3}, [10]],
)
def test_retention_parse_rejects(value):
    with pytest.raises(ValueError, match="true, false, a count"):
        Retention.parse(value, KEEP_100)


def test_jitter_spreads_a_wait_below_its_backoff_as_bullmq_does():
    backoff = Backoff.parse({"type": "exponential", "delay": 1000, "jitter": 0.5})
    waits = {backoff.wait_ms(3) for _ in range(200)}
    assert all(2000 <= wait <= 4000 for wait in waits)
    assert len(waits) > 50, "the waits are spread, not one value"
    assert Backoff.parse({"type": "fixed", "delay": 1000, "jitter": 0}).wait_ms(2) == 1000
    assert Backoff.parse(backoff.to_dict()) == backoff


@pytest.mark.parametrize("jitter", [-0.1, 1.5, "0.5", True, None])
def test_jitter_outside_0_to_1_is_refused(jitter):
    with pytest.raises(ValueError, match="jitter"):
        Backoff.parse({"type": "fixed", "delay": 1000, "jitter": jitter})


def test_expires_takes_ms_from_now_or_an_iso_time_and_refuses_the_rest():
    now = 1_700_000_000_000  # 2023-11-14
    assert resolve_options(JobOptions(), {"expires": 5000}, now=now).expires == now + 5000
    assert resolve_options(JobOptions(), {"expires": "2027-01-15T08:00:00+00:00"}, now=now).expires == 1_800_000_000_000
    for bad in (0, -5, "soon", "2027-01-15T08:00:00", "2020-01-01T00:00:00+00:00"):
        with pytest.raises(InvalidJobOptions) as error:
            resolve_options(JobOptions(), {"expires": bad}, now=now)
        assert "expires" in error.value.errors
