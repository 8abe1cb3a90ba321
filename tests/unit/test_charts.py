"""The dashboard's server-drawn SVG charts: well-formed, escaped, and drawing the numbers given."""

import xml.etree.ElementTree as ET

import pytest

from rideshare.admin.charts import (
    age_gauge,
    bin_minutes,
    binned,
    duration,
    histogram_chart,
    histogram_counts,
    nice_ceiling,
    throughput_chart,
    utilisation_gauge,
)

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_800_000_000_000 // 3_600_000 * 3_600_000  # on the hour


def series(minutes: int, completed: int = 0, failed: int = 0) -> list[dict[str, int]]:
    return [{"minute": T0 + i * 60_000, "completed": completed, "failed": failed} for i in range(minutes)]


def parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


@pytest.mark.parametrize(("minutes", "size"), [(60, 1), (144, 1), (24 * 60, 10), (72 * 60, 30), (200 * 60, 84)])
def test_a_window_fits_in_at_most_144_bars(minutes, size):
    assert bin_minutes(minutes) == size
    assert minutes / size <= 144


def test_minutes_add_up_into_bins_aligned_on_their_size():
    points = [{"minute": T0 + i * 60_000, "completed": 1, "failed": i % 2} for i in range(30)]
    bins = binned(points, 15, ("completed", "failed"))
    assert [b["minute"] for b in bins] == [T0, T0 + 15 * 60_000]
    assert [(b["completed"], b["failed"]) for b in bins] == [(15, 7), (15, 8)]


@pytest.mark.parametrize(("value", "top"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (180, 200), (501, 1000)])
def test_the_y_axis_ends_on_a_round_number(value, top):
    assert nice_ceiling(value) == top


def test_the_throughput_chart_draws_one_bar_per_minute_with_stacked_failures():
    points = series(60)
    points[10] = {**points[10], "completed": 4, "failed": 1}
    points[59] = {**points[59], "completed": 2}
    svg = parse(throughput_chart(points))
    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert (svg.get("data-completed"), svg.get("data-failed"), svg.get("data-bars")) == ("6", "1", "60")
    assert len(svg.findall(f".//{SVG}rect[@class='completed-bar']")) == 2
    [failed] = svg.findall(f".//{SVG}rect[@class='failed-bar']")
    [done] = [r for r in svg.findall(f".//{SVG}rect[@class='completed-bar']") if r.get("x") == failed.get("x")]
    # The failed part sits right on top of the completed part of the same bar.
    assert float(failed.get("y")) + float(failed.get("height")) == pytest.approx(float(done.get("y")), abs=0.2)
    assert "4 completed, 1 failed" in "".join(svg.itertext())


def test_a_72_hour_chart_bins_by_half_hours_and_labels_days():
    svg = parse(throughput_chart(series(72 * 60, completed=1)))
    assert (svg.get("data-bars"), svg.get("data-bin-minutes"), svg.get("data-completed")) == ("144", "30", "4320")
    labels = [t.text for t in svg.findall(f"{SVG}text") if t.text and ":" in t.text]
    assert all(len(label.split()) == 2 for label in labels)  # 'dd HH:MM'


def test_an_empty_window_still_draws_axes():
    svg = parse(throughput_chart(series(60)))
    assert svg.get("data-completed") == "0"
    assert svg.findall(f".//{SVG}rect[@class='completed-bar']") == []
    assert parse(throughput_chart([], compact=True)).get("data-bars") == "0"


def test_labels_are_escaped():
    svg = throughput_chart(series(5), label="<script>x</script> & co")
    assert "<script>" not in str(svg) and "&lt;script&gt;" in str(svg)
    parse(svg)


def test_the_histogram_adds_up_buckets_and_shows_percentiles():
    buckets = [{"w5": 3, "w100": 1, "winf": 2}, {"w5": 1, "p20": 9}]
    counts = histogram_counts(buckets, "w")
    assert dict(counts)["≤ 5 ms"] == 4 and dict(counts)["≤ 100 ms"] == 1 and counts[-1] == ("> 5 min", 2)
    assert sum(n for _, n in counts) == 7
    svg = parse(histogram_chart(counts, p50=4.2, p95=2_500, kind="wait"))
    assert svg.get("data-chart") == "wait" and svg.get("data-jobs") == "7"
    assert "p50 4.2 ms · p95 2.5 s · 7 jobs" in "".join(svg.itertext())


def test_gauges():
    assert parse(age_gauge(None)).get("aria-label") == "Oldest waiting job: none waiting"
    green, red = parse(age_gauge(2_000)), parse(age_gauge(2 * 3_600_000))
    assert green.findall(f"{SVG}rect")[1].get("fill") == "#2da44e"
    assert red.findall(f"{SVG}rect")[1].get("fill") == "#cf222e"
    assert float(red.findall(f"{SVG}rect")[1].get("width")) == 140.0  # full beyond an hour (240 wide, 100 for the text)
    assert "2 / 4" in "".join(parse(utilisation_gauge(2, 4)).itertext())
    assert "no slots" in "".join(parse(utilisation_gauge(0, 0)).itertext())


@pytest.mark.parametrize(
    ("ms", "text"), [(None, "–"), (4.25, "4.2 ms"), (850, "850 ms"), (3_200, "3.2 s"), (240_000, "4 min")]
)
def test_durations_read_as_people_say_them(ms, text):
    assert duration(ms) == text
