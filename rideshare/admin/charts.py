"""Server-drawn SVG charts for the dashboard: no chart library, no script, no build step.

Each function takes plain numbers (from control.queue_health and JobStore.history) and
returns one <svg> element as Markup, ready for a Jinja template. Every bar carries a
<title>, so a browser shows its value on hover, and every chart an aria-label.
"""

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from jobqueue.scripts import MINUTE_BOUNDS_MS

COMPLETED = "#2da44e"
FAILED = "#cf222e"
BAR = "#0969da"
GRID = "#d0d7de"
TEXT = "#57606a"
# At most this many bars in a throughput chart: minutes are added up into bins past it.
MAX_BARS = 144
# The ages an "oldest waiting" gauge spans, on a log scale: 1 s to 1 h.
GAUGE_LOW_MS, GAUGE_HIGH_MS = 1_000, 3_600_000


def bin_minutes(minutes: int, max_bars: int = MAX_BARS) -> int:
    """Minutes per bar so that a window of minutes fits in max_bars (1, 5, 10, 15, 30 or 60)."""
    for size in (1, 5, 10, 15, 30, 60):
        if minutes / size <= max_bars:
            return size
    return math.ceil(minutes / max_bars)


def binned(series: Sequence[Mapping[str, Any]], size: int, fields: Iterable[str]) -> list[dict[str, int]]:
    """Per-minute points ({minute, field: n}) added up into bins of size minutes, oldest first;
    a bin starts on a multiple of size minutes (so bars stay put as time moves on)."""
    names = list(fields)
    bins: dict[int, dict[str, int]] = {}
    for point in series:
        start = int(point["minute"]) // (size * 60_000) * size * 60_000
        into = bins.setdefault(start, {"minute": start, **dict.fromkeys(names, 0)})
        for name in names:
            into[name] += int(point.get(name, 0))
    return [bins[start] for start in sorted(bins)]


def nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 5 x 10^n at or above value (at least 1): the top of a y axis."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def clock(ms: int, with_day: bool = False) -> str:
    """A UTC time of day, 'HH:MM' (with the day of the month: 'dd HH:MM')."""
    return time.strftime("%d %H:%M" if with_day else "%H:%M", time.gmtime(ms / 1000))


def duration(ms: float | None) -> str:
    """A duration as people read it: '850 ms', '3.2 s', '4 min', '2.5 h'; '–' for None."""
    if ms is None:
        return "–"
    if ms < 1_000:
        return f"{ms:.0f} ms" if ms >= 10 or ms == int(ms) else f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.0f} min"
    return f"{ms / 3_600_000:.1f} h"


def _svg(width: int, height: int, label: str, body: list[str], **data: Any) -> Markup:
    attrs = "".join(f' data-{escape(k.replace("_", "-"))}="{escape(v)}"' for k, v in data.items())
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}"{attrs}>'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def throughput_chart(
    series: Sequence[Mapping[str, Any]],
    *,
    width: int = 640,
    height: int = 180,
    compact: bool = False,
    label: str = "Completed and failed jobs per minute",
) -> Markup:
    """Completed (green) and failed (red, stacked on top) jobs per bar over the series' window.

    compact: a sparkline (no axes, no labels) for the overview.
    """
    size = bin_minutes(len(series)) if series else 1
    bars = binned(series, size, ("completed", "failed"))
    left, right, top, bottom = (2, 2, 2, 2) if compact else (40, 8, 10, 22)
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((b["completed"] + b["failed"] for b in bars), default=0)
    ceiling = nice_ceiling(peak)
    body: list[str] = []
    if not compact:
        for fraction in (0, 0.5, 1):
            y = top + plot_h * (1 - fraction)
            body.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
            value = ceiling * fraction
            text = f"{value:g}"
            body.append(
                f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{TEXT}">{text}</text>'
            )
    step = plot_w / max(len(bars), 1)
    gap = 1 if step > 3 else 0
    with_day = len(series) > 24 * 60
    unit = "minute" if size == 1 else f"{size} minutes"
    for index, bar in enumerate(bars):
        x = left + index * step
        done_h = plot_h * bar["completed"] / ceiling
        fail_h = plot_h * bar["failed"] / ceiling
        tip = escape(
            f"{clock(bar['minute'], with_day)} UTC, {unit}: {bar['completed']} completed, {bar['failed']} failed"
        )
        y_done = top + plot_h - done_h
        body.append(f"<g><title>{tip}</title>")
        bar_w = max(step - gap, 0.5)
        # The whole column takes the hover, not only the (maybe tiny) bar.
        body.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar_w:.1f}" height="{plot_h:.1f}" fill="transparent"/>')
        if bar["completed"]:
            body.append(
                f'<rect class="completed-bar" x="{x:.1f}" y="{y_done:.1f}" width="{bar_w:.1f}" '
                f'height="{done_h:.1f}" fill="{COMPLETED}"/>'
            )
        if bar["failed"]:
            body.append(
                f'<rect class="failed-bar" x="{x:.1f}" y="{y_done - fail_h:.1f}" width="{bar_w:.1f}" '
                f'height="{fail_h:.1f}" fill="{FAILED}"/>'
            )
        body.append("</g>")
    if not compact and bars:
        for index in (0, len(bars) // 2, len(bars) - 1):
            x = left + index * step + step / 2
            anchor = "start" if index == 0 else "end" if index == len(bars) - 1 else "middle"
            body.append(
                f'<text x="{x:.1f}" y="{height - 6}" text-anchor="{anchor}" font-size="11" fill="{TEXT}">'
                f"{escape(clock(bars[index]['minute'], with_day))}</text>"
            )
    completed = sum(b["completed"] for b in bars)
    failed = sum(b["failed"] for b in bars)
    return _svg(
        width,
        height,
        f"{label}: {completed} completed, {failed} failed",
        body,
        chart="throughput",
        completed=completed,
        failed=failed,
        bin_minutes=size,
        bars=len(bars),
    )


def histogram_counts(buckets: Iterable[Mapping[str, float]], prefix: str) -> list[tuple[str, int]]:
    """The wait ('w') or processing ('p') time histogram of per-minute buckets, added up:
    [(upper bound as text, count)], the last one open ('> 300 s')."""
    bounds = [*MINUTE_BOUNDS_MS, None]
    counts = [0] * len(bounds)
    for bucket in buckets:
        for index, bound in enumerate(bounds):
            counts[index] += int(bucket.get(f"{prefix}{'inf' if bound is None else bound}", 0))
    labels = [
        f"≤ {duration(bound)}" if bound is not None else f"> {duration(MINUTE_BOUNDS_MS[-1])}" for bound in bounds
    ]
    return list(zip(labels, counts, strict=True))


def histogram_chart(
    counts: Sequence[tuple[str, int]],
    *,
    p50: float | None,
    p95: float | None,
    width: int = 640,
    height: int = 150,
    label: str = "Time histogram",
    kind: str = "time",
) -> Markup:
    """One bar per time bucket (counts from histogram_counts), with p50 and p95 in the title."""
    left, right, top, bottom = 8, 8, 18, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    ceiling = nice_ceiling(max((n for _, n in counts), default=0))
    step = plot_w / max(len(counts), 1)
    total = sum(n for _, n in counts)
    body = [
        f'<text x="{left}" y="12" font-size="11" fill="{TEXT}">'
        f"p50 {escape(duration(p50))} · p95 {escape(duration(p95))} · {total} jobs</text>"
    ]
    for index, (bucket, n) in enumerate(counts):
        x = left + index * step
        bar_h = plot_h * n / ceiling
        body.append(
            f'<g><title>{escape(bucket)}: {n}</title><rect x="{x + 1:.1f}" y="{top + plot_h - bar_h:.1f}" '
            f'width="{max(step - 2, 1):.1f}" height="{bar_h:.1f}" fill="{BAR}"/></g>'
        )
        if index % 2 == 0:
            body.append(
                f'<text x="{x + step / 2:.1f}" y="{height - 20}" text-anchor="middle" font-size="9" fill="{TEXT}">'
                f"{escape(bucket.removeprefix('≤ '))}</text>"
            )
    body.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{GRID}"/>')
    return _svg(width, height, f"{label}: p50 {duration(p50)}, p95 {duration(p95)}", body, chart=kind, jobs=total)


def age_gauge(age_ms: int | None, *, width: int = 240, height: int = 26) -> Markup:
    """How long the oldest waiting job has waited: a bar on a log scale from 1 s to 1 h,
    green under 10 s, amber under 5 min, red beyond."""
    if age_ms is None:
        fraction, colour, text = 0.0, COMPLETED, "none waiting"
    else:
        span = math.log10(GAUGE_HIGH_MS / GAUGE_LOW_MS)
        fraction = min(max(math.log10(max(age_ms, 1) / GAUGE_LOW_MS) / span, 0.02), 1.0)
        colour = COMPLETED if age_ms < 10_000 else "#bf8700" if age_ms < 300_000 else FAILED
        text = duration(age_ms)
    bar = width - 100
    body = [
        f'<rect x="0" y="4" width="{bar}" height="{height - 8}" rx="4" fill="#eaeef2"/>',
        f'<rect x="0" y="4" width="{bar * fraction:.1f}" height="{height - 8}" rx="4" fill="{colour}"/>',
        f'<text x="{bar + 6}" y="{height / 2 + 4:.0f}" font-size="12" fill="#1f2328">{escape(text)}</text>',
    ]
    return _svg(width, height, f"Oldest waiting job: {text}", body, chart="oldest", age_ms=age_ms or 0)


def utilisation_gauge(active: int, slots: int, *, width: int = 160, height: int = 22) -> Markup:
    """Running jobs against the live workers' slots (their concurrency added up)."""
    fraction = min(active / slots, 1.0) if slots else 0.0
    text = f"{active} / {slots}" if slots else f"{active} / no slots"
    body = [
        f'<rect x="0" y="4" width="{width - 70}" height="{height - 8}" rx="4" fill="#eaeef2"/>',
        f'<rect x="0" y="4" width="{(width - 70) * fraction:.1f}" height="{height - 8}" rx="4" fill="{BAR}"/>',
        f'<text x="{width - 64}" y="{height / 2 + 4:.0f}" font-size="12" fill="#1f2328">{escape(text)}</text>',
    ]
    return _svg(width, height, f"Utilisation: {text} slots busy", body, chart="utilisation")


SKIPPED = "#8c959f"
TICK_COLOURS = {"fired": COMPLETED, "skipped": SKIPPED, "invalid": FAILED}


def tick_sparkline(history: Sequence[Mapping[str, Any]], *, width: int = 300, height: int = 36) -> Markup:
    """A schedule's last ticks, oldest left: a tall green bar per tick fired, a short grey one per
    tick skipped (missed), a red one per tick whose job was not valid. history: newest first."""
    ticks = list(reversed(history))
    slots = max(len(ticks), 20)
    step = width / slots
    body = [f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" stroke="{GRID}"/>']
    for index, tick in enumerate(ticks):
        outcome = str(tick.get("outcome", "fired"))
        bar = height - 4 if outcome != "skipped" else (height - 4) / 3
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(int(tick.get('tick', 0)) / 1000))} UTC: {outcome}"
        if tick.get("jobId"):
            text += f" ({tick['jobId']})"
        body.append(
            f'<rect class="tick {escape(outcome)}" x="{index * step + step * 0.15:.1f}" y="{height - bar:.1f}" '
            f'width="{max(step * 0.7, 1):.1f}" height="{bar:.1f}" fill="{TICK_COLOURS.get(outcome, BAR)}">'
            f"<title>{escape(text)}</title></rect>"
        )
    fired = sum(1 for t in ticks if t.get("outcome") == "fired")
    label = f"Last {len(ticks)} ticks: {fired} fired, {len(ticks) - fired} not"
    return _svg(width, height, label, body, chart="ticks", fired=fired, ticks=len(ticks))
