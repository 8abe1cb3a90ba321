"""GET /metrics: Prometheus text, read from the job store so every process's work is counted."""

from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

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


@bp.get("/metrics")
def metrics() -> Response:
    token = current_app.config.get("METRICS_TOKEN")
    if token and request.headers.get("Authorization") != f"Bearer {token}":
        return Response("unauthorized\n", 401, {"WWW-Authenticate": "Bearer"})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobStoreCollector(current_app.extensions["jobs"].store))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
