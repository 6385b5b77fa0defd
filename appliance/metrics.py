"""Prometheus metrics of one server, in a registry of its own (two apps in one process never collide).

Every channel counts into the same registry (the use cases in appliance/usecases.py); the HTTP
middleware that counts requests is appliance/api/metrics.py."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("appliance_http_requests", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("appliance_http_request_seconds", "Time to the end of the response.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.answers = Counter("appliance_answers", "Answers by outcome: answered, not_found, busy, cancelled, error.",
                               ["outcome"], registry=r)
        self.first_token = Histogram("appliance_answer_first_token_seconds", "Question to first answer token.",
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("appliance_answer_tokens", "Answer tokens streamed (text deltas).", registry=r)
        self.waiting = Gauge("appliance_answer_queue_waiting", "Answers waiting for the model.", registry=r)
        self.running = Gauge("appliance_answer_running", "Answers being generated.", registry=r)
        self.searches = Counter("appliance_searches", "Searches through POST /v1/search.", registry=r)
        self.ingest_files = Counter("appliance_ingest_files", "Files of this server's ingest jobs (uploads, "
                                    "handed-over runs, re-ingests, watched folders), by status.", ["status"],
                                    registry=r)
        self.ingest_chunks = Counter("appliance_ingest_chunks", "Chunks written by this server's ingest jobs.",
                                     registry=r)
        self.ingest_seconds = Histogram("appliance_ingest_seconds", "Time of one ingest job.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.chunks = Gauge("appliance_store_chunks", "Chunks in the store.", registry=r)
