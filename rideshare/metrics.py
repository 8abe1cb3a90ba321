"""GET /metrics: Prometheus text, read from the job store so every process's work is counted."""

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from jobqueue.limits import FlowControl
from jobqueue.store import HISTOGRAM_BOUNDS, JobStore
from rideshare.queues import QUEUES

bp = Blueprint("metrics", __name__)


class JobStoreCollector(Collector):
    """Counters, processing-time histograms and queue gauges of every queue."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[object]:
        totals = self.store.metrics()
        for event, help_text in (
            ("added", "Jobs added"),
            ("completed", "Jobs completed"),
            ("failed", "Jobs failed for good"),
            ("retried", "Attempts that failed and were scheduled again"),
            ("cancelled", "Jobs cancelled (before or while they ran)"),
            ("expired", "Jobs that had not started by their expiry"),
            ("snoozed", "Attempts that snoozed (no attempt spent)"),
            ("deduplicated", "Jobs not added: an equal job held the deduplication key"),
            ("rate_limited", "Attempts given back because the gateway asked to slow down (the queue throttled)"),
        ):
            family = CounterMetricFamily(f"rideshare_jobs_{event}", help_text, labels=["queue"])
            for queue in QUEUES:
                family.add_metric([queue], totals.get(f"{queue}:{event}", 0))
            yield family

        histogram = HistogramMetricFamily(
            "rideshare_job_processing_seconds", "Time spent running one attempt", labels=["queue"]
        )
        for queue in QUEUES:
            raw = self.store.histogram(queue)
            cumulative, buckets = 0.0, []
            for bound in HISTOGRAM_BOUNDS:
                cumulative += raw.get(str(bound), 0.0)
                buckets.append((str(bound), cumulative))
            cumulative += raw.get("+Inf", 0.0)
            buckets.append(("+Inf", cumulative))
            histogram.add_metric([queue], buckets, sum_value=raw.get("sum", 0.0))
        yield histogram

        depth = GaugeMetricFamily("rideshare_queue_jobs", "Jobs in each state", labels=["queue", "state"])
        delayed = GaugeMetricFamily(
            "rideshare_queue_delayed_jobs", "Jobs waiting on a delay or a retry backoff", labels=["queue"]
        )
        paused = GaugeMetricFamily("rideshare_queue_paused", "1 while the queue is paused", labels=["queue"])
        for queue in QUEUES:
            counts = self.store.counts(queue)
            for state, value in counts.items():
                depth.add_metric([queue, state], value)
            delayed.add_metric([queue], counts["delayed"])
            paused.add_metric([queue], 1 if self.store.is_paused(queue) else 0)
        oldest = GaugeMetricFamily(
            "rideshare_queue_oldest_waiting_seconds", "How long the oldest waiting job has waited", labels=["queue"]
        )
        for queue in QUEUES:
            age = self.store.oldest_waiting_ms(queue)
            oldest.add_metric([queue], (age or 0) / 1000)
        yield depth
        yield delayed
        yield paused
        yield oldest
        yield from self.flow_control()

    def flow_control(self) -> Iterator[object]:
        """Each queue's limits (absent: no such limit), how full they are, and what waits on them.
        No per-group labels: the largest backlog stands for them (groups are unbounded)."""
        families = {
            "rate_max": ("rideshare_queue_rate_limit_jobs", "Jobs the rate limit lets start per window"),
            "rate_window": ("rideshare_queue_rate_limit_window_seconds", "The rate limit's window"),
            "rate_used": ("rideshare_queue_rate_limit_used_jobs", "Rate slots held in the current window"),
            "concurrency": ("rideshare_queue_concurrency_limit", "Jobs the queue may run at once, across workers"),
            "group_concurrency": ("rideshare_queue_group_concurrency_limit", "Jobs one group may run at once"),
            "waiting_on_limit": ("rideshare_queue_waiting_on_limit_jobs", "Waiting jobs a limit holds back now"),
            "limited": ("rideshare_queue_limited", "1 while a limit or a throttle holds the queue back"),
            "grouped": ("rideshare_queue_grouped_jobs", "Jobs held behind their group's earlier jobs"),
            "groups": ("rideshare_queue_groups", "Groups with jobs held back"),
            "largest_group": ("rideshare_queue_largest_group_backlog_jobs", "The most jobs one group holds back"),
            "throttled": ("rideshare_queue_throttled_seconds", "How long the queue takes no job yet"),
        }
        gauges = {key: GaugeMetricFamily(name, text, labels=["queue"]) for key, (name, text) in families.items()}
        for queue in QUEUES:
            status = FlowControl(self.store, queue).status(top=1)
            limits = status["limits"]
            values: dict[str, float | None] = {
                "rate_max": limits["rate"]["max"] if limits["rate"] else None,
                "rate_window": limits["rate"]["perMs"] / 1000 if limits["rate"] else None,
                "rate_used": status["rateUsed"],
                "concurrency": limits["concurrency"],
                "group_concurrency": limits["group"]["concurrency"],
                "waiting_on_limit": status["waitingOnLimit"],
                "limited": 1 if status["limited"] else 0,
                "grouped": status["grouped"],
                "groups": status["groupCount"],
                "largest_group": status["groups"][0]["backlog"] if status["groups"] else 0,
                "throttled": status["throttledMs"] / 1000,
            }
            for key, value in values.items():
                if value is not None:
                    gauges[key].add_metric([queue], value)
        yield from gauges.values()


@bp.get("/metrics")
def metrics() -> Response:
    token = current_app.config.get("METRICS_TOKEN")
    if token and request.headers.get("Authorization") != f"Bearer {token}":
        return Response("unauthorized\n", 401, {"WWW-Authenticate": "Bearer"})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobStoreCollector(current_app.extensions["jobs"].store))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
