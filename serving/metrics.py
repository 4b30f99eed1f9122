"""Prometheus metrics of a serving replica, in a registry of its own (one app per registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300)


class ReplicaMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("streamrec_serve_requests_total", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("streamrec_serve_request_seconds", "scoring latency (server side)", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.candidates = Counter("streamrec_serve_candidates_total", "candidates scored", registry=r)
        self.logged = Counter("streamrec_serve_feature_logs_total", "FeatureLogs of served requests queued",
                              registry=r)
        self.log_failed = Gauge("streamrec_serve_feature_logs_failed", "FeatureLogs the broker never acknowledged",
                                registry=r)
        self.version = Gauge("streamrec_serve_model_version", "last delta version applied", registry=r)
        self.dense_version = Gauge("streamrec_serve_dense_version", "trainer dense version of the served weights",
                                   registry=r)
        self.rows = Gauge("streamrec_serve_rows", "embedding rows held", registry=r)
        self.lag_messages = Gauge("streamrec_serve_delta_lag_messages", "delta messages not yet applied",
                                  registry=r)
        self.lag_seconds = Gauge("streamrec_serve_delta_lag_seconds",
                                 "age of the oldest unapplied delta (0 when caught up)", registry=r)
        self.deltas = Counter("streamrec_serve_deltas_applied_total", "delta messages applied by kind", ["kind"],
                              registry=r)
        self.bad_deltas = Counter("streamrec_serve_deltas_undecodable_total", "messages that are not deltas",
                                  registry=r)
        self.freshness = Histogram(
            "streamrec_serve_freshness_seconds", "example ingest (Kafka timestamp) -> its update applied here; "
            "per delta, its oldest example", buckets=FRESHNESS_BUCKETS, registry=r)
        self.freshness_now = Gauge("streamrec_serve_freshness_last_seconds", "freshness of the last delta",
                                   registry=r)
        self.ready = Gauge("streamrec_serve_ready", "1 once bootstrapped and caught up", registry=r)
