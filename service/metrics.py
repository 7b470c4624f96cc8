"""Every Prometheus metric of the gateway, defined once, on a registry owned by the app (no globals)."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

# Seconds; dense under 100 ms where detection and inference live on a CPU, up to a 30 s video.
LATENCY_BUCKETS = (
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
COUNT_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
STREAM_FRAME_KINDS = ("received", "analysed", "dropped", "failed")
# A job's final states (service/jobs/states.py FINISHED): each series exists from the start, at 0, so a
# rate over them answers before the first job ends.
JOB_FINAL_STATES = ("succeeded", "failed", "cancelled")


class Metrics:
    """The gateway's metrics; one instance per app so tests can build many apps side by side."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # process_* (CPU seconds, resident memory, open fds) and python_info: the gateway's own resources.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "fer_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "fer_http_request_duration_seconds",
            "HTTP request latency.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.client_disconnects = Counter(
            "fer_client_disconnects",
            "Requests whose client went away before its body was read (status 499 in fer_http_requests).",
            registry=r,
        )
        self.in_flight = Gauge("fer_in_flight_requests", "Prediction requests being processed.", registry=r)
        self.memory_reserved = Gauge(
            "fer_memory_reserved_bytes",
            "Per-request memory reserved against the budget now, by pool (bodies being read, work on them).",
            ["pool"],
            registry=r,
        )
        self.memory_budget = Gauge(
            "fer_memory_budget_bytes",
            "The per-request memory budget (limit minus the resting reserve).",
            registry=r,
        )
        self.memory_growth = Gauge(
            "fer_memory_resting_growth_bytes",
            "How far the gateway's memory at rest has grown since its warm start (after handing free heap "
            "back): the work pool is this much smaller.",
            registry=r,
        )
        self.heap_trims = Counter(
            "fer_memory_heap_trims",
            "Times the allocator's free heap was handed back to the system (malloc_trim) because resting "
            "memory had grown.",
            registry=r,
        )
        self.rejected = Counter(
            "fer_rejected_requests", "Requests refused before processing, by reason.", ["reason"], registry=r
        )
        self.stage_seconds = Histogram(
            "fer_stage_duration_seconds",
            "Pipeline stage latency.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.faces_per_image = Histogram(
            "fer_faces_per_image", "Faces detected per image.", buckets=COUNT_BUCKETS, registry=r
        )
        self.faces = Counter("fer_faces", "Faces analysed.", registry=r)
        self.expressions = Counter(
            "fer_expressions",
            "Faces by predicted (top) expression label, images and clip frames alike.",
            ["label"],
            registry=r,
        )
        self.triton_seconds = Histogram(
            "fer_triton_request_duration_seconds",
            "Latency of one Triton inference call.",
            ["model", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.triton_restarts = Counter(
            "fer_triton_restarts",
            "Restarts of the embedded Triton after it exited, by outcome (ok, failed).",
            ["outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "fer_triton_batch_size",
            "Faces per Triton inference call.",
            ["model"],
            buckets=COUNT_BUCKETS,
            registry=r,
        )

        self.prompt_cache = Counter(
            "fer_prompt_cache",
            "Caller-prompt embedding lookups in the gateway's LRU cache, by result: hit or miss.",
            ["result"],
            registry=r,
        )

        self.video_frames = Counter(
            "fer_video_frames",
            "Video frames, by kind: decoded, or analysed (progress of running clips).",
            ["kind"],
            registry=r,
        )
        self.video_duration = Histogram(
            "fer_video_duration_seconds",
            "Duration of the clips analysed.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.video_realtime_factor = Histogram(
            "fer_video_realtime_factor",
            "Analysis wall time divided by clip duration (<1: faster than real time).",
            buckets=(0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
            registry=r,
        )
        self._job_metrics(r)

    def _job_metrics(self, r: CollectorRegistry) -> None:
        """Long-video jobs (POST /v1/jobs): the table's counts, this process' workers, frames and age."""
        self.jobs = Gauge("fer_jobs", "Jobs in the job table, by state.", ["state"], registry=r)
        self.jobs_finished = Counter(
            "fer_jobs_finished", "Jobs this process saw end, by final state.", ["state"], registry=r
        )
        for state in JOB_FINAL_STATES:
            self.jobs_finished.labels(state)
        self.jobs_running = Gauge("fer_job_workers_busy", "Jobs this process is analysing.", registry=r)
        self.job_frames = Counter("fer_job_frames", "Sampled frames analysed by jobs.", registry=r)
        self.job_queue_age = Gauge(
            "fer_job_queue_age_seconds", "Age of the oldest queued job (0: none waiting).", registry=r
        )

        self.streams_open = Gauge("fer_streams_open", "Live streams (GET /v1/stream) open now.", registry=r)
        self.stream_frames = Counter(
            "fer_stream_frames",
            "Live-stream frames by kind: received, analysed, dropped (a newer one came while it waited), "
            "failed (answered with an error message).",
            ["kind"],
            registry=r,
        )
        self.stream_answer_seconds = Histogram(
            "fer_stream_answer_seconds",
            "Live stream: from a frame's arrival to its answer written to the socket.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        for kind in STREAM_FRAME_KINDS:  # every series exists from the start, at 0
            self.stream_frames.labels(kind)

    def observe_expressions(self, labels: list[str]) -> None:
        """Count each face's top expression label; called where face results are built.

        Labels come from the served model's config (a bounded set), never from a request, so the label
        values of this counter cannot grow without bound.
        """
        for label, count in collections.Counter(labels).items():
            self.expressions.labels(label).inc(count)

    @contextmanager
    def time_stage(self, stage: str, timings_ms: dict[str, float]) -> Iterator[None]:
        """Time a pipeline stage into the histogram and into the response's ``timings_ms``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.stage_seconds.labels(stage).observe(elapsed)
            timings_ms[stage] = round(elapsed * 1000.0, 3)
