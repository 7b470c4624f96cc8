"""The job worker inside the gateway process: claims queued jobs, analyses them as a stream, writes their
results, and keeps the table honest (interrupted jobs re-queued at start, expired ones deleted).

Owned by the app's lifespan: ``start`` re-queues what a previous process left running and starts the
worker and sweeper tasks; ``stop`` puts the jobs it was running back in the queue (not an attempt lost).
A running job's worker renews its lease every third of FER_JOBS_LEASE_S and stops when the store says the
attempt is no longer its own (cancelled from another replica, or taken over after a stall). With a shared
store (Redis) the sweeper takes over jobs whose lease lapsed, from whichever replica died.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from contextlib import suppress
from dataclasses import dataclass

from service.config import Settings
from service.exceptions import JobNotFound, JobQueueFull, JobStoreUnavailable, ServiceError
from service.jobs.results import JobFiles, write_results
from service.jobs.states import Job, State
from service.jobs.store import AsyncJobStore
from service.metrics import Metrics
from service.schemas import PredictQuery
from service.serving.clip import ClipRequest, LongAnalysis, VideoPipeline
from service.serving.memory import MemoryBudget
from service.serving.prompting import validate_prompts
from service.vision.clip_analysis import AnalysisAbandoned
from service.vision.video import ClipInfo, SamplingPlan

logger = logging.getLogger(__name__)
STORE_RETRY_S = 1.0  # a worker's pause before it asks an unreachable job store again


def expected_frames(info: ClipInfo, plan: SamplingPlan) -> int:
    """How many frames the sampling should give this video (its progress' denominator)."""
    duration = min(info.duration_s, plan.max_duration_s)
    decoded = duration * info.fps if info.fps else 0.0
    sampled = min(duration * plan.fps, decoded or math.inf) if plan.fps else decoded / (plan.stride or 1)
    return min(math.ceil(sampled), plan.max_frames) if math.isfinite(sampled) else 0


@dataclass
class ProgressReporter:
    """Writes a running job's progress at most every ``interval_s`` (and counts its frames)."""

    store: AsyncJobStore
    job_id: str
    attempt: int  # written only while this attempt runs the job (a stale one writes nothing)
    plan: SamplingPlan
    interval_s: float
    metrics: Metrics
    started: float
    last_write: float = 0.0
    last_done: int = 0

    async def on_window(self, info: ClipInfo) -> None:
        self.metrics.job_frames.inc(info.frames_analysed - self.last_done)
        self.last_done = info.frames_analysed
        now = time.monotonic()
        if now - self.last_write < self.interval_s:
            return
        self.last_write = now
        expected = expected_frames(info, self.plan)
        with suppress(JobStoreUnavailable):  # progress is best effort; the next window writes it again
            await self.store.call(
                self.store.sync.progress,
                self.job_id,
                info.frames_analysed,
                expected,
                now - self.started,
                self.attempt,
            )


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        store: AsyncJobStore,
        pipeline: VideoPipeline,
        memory: MemoryBudget,
        metrics: Metrics,
    ) -> None:
        self._settings, self._store, self._pipeline = settings, store, pipeline
        self._memory, self._metrics = memory, metrics
        self._wake = asyncio.Event()
        self._stops: dict[str, threading.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def files(self, job_id: str, attempt: int = 0) -> JobFiles:
        """The job's files; ``attempt``: whose results (a finished job's are its last attempt's)."""
        return JobFiles(self._settings.jobs_dir, job_id, attempt)

    @property
    def store(self) -> AsyncJobStore:
        return self._store

    async def start(self) -> None:
        settings = self._settings
        requeued, failed = await self._store.call(
            self._store.sync.requeue_running,
            settings.jobs_max_attempts,
            time.time(),
            settings.jobs_retention_s,
        )
        if requeued or failed:
            logger.warning("jobs interrupted by the last stop: %d queued again, %d failed", requeued, failed)
        workers = [self._spawn(self._work(), f"job-worker-{n}") for n in range(settings.jobs_workers)]
        self._tasks = [*workers, self._spawn(self._sweep(), "job-sweeper")]

    @staticmethod
    def _spawn(coroutine: object, name: str) -> asyncio.Task[None]:
        return asyncio.create_task(coroutine, name=name)  # type: ignore[arg-type]

    async def stop(self) -> None:
        for stop in self._stops.values():
            stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def submit(self, job: Job) -> None:
        if await self._store.call(self._store.sync.queued_count) >= self._settings.jobs_max_queued:
            raise JobQueueFull(
                f"{self._settings.jobs_max_queued} jobs are waiting already; retry later",
                retry_after_s=30,
            )
        await self._store.call(self._store.sync.add, job)
        self._wake.set()

    async def owned(self, job_id: str, owner: str) -> Job:
        """The job if it exists, has not expired, and belongs to ``owner`` (else 404, alike for all)."""
        job = await self._store.call(self._store.sync.get, job_id)
        expired = job is not None and job.expires_at is not None and job.expires_at <= time.time()
        if job is None or job.owner != owner or expired:
            raise JobNotFound(f"no job {job_id!r} for this API key")
        return job

    async def cancel(self, job_id: str, owner: str) -> Job:
        """Cancel an unfinished job and delete its files; a finished one is deleted outright."""
        job = await self.owned(job_id, owner)
        if job.finished:
            await self._store.call(self._store.sync.delete, job_id)
        else:
            await self._store.call(
                self._store.sync.finish, job_id, "cancelled", time.time(), self._settings.jobs_retention_s
            )
            if (stop := self._stops.get(job_id)) is not None:
                stop.set()
            self._metrics.jobs_finished.labels("cancelled").inc()
        await asyncio.to_thread(self.files(job_id).remove)
        return await self._store.call(self._store.sync.get, job_id) or job

    async def _work(self) -> None:
        while True:
            try:
                job = await self._store.call(self._store.sync.claim, time.time())
            except JobStoreUnavailable:
                logger.warning("job store unavailable; the worker retries in %g s", STORE_RETRY_S)
                await asyncio.sleep(STORE_RETRY_S)
                continue
            if job is None:
                # Woken by a submit, or polling (another process may have queued one: Redis-free restarts).
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                self._wake.clear()
                continue
            try:
                await self._run(job)
            except JobStoreUnavailable:
                # The job stays "running" in the store; its lease lapses and a replica takes it over.
                logger.warning("job %s: the job store went away while finishing it", job.id)

    async def _run(self, job: Job) -> None:
        stop = self._stops[job.id] = threading.Event()
        self._metrics.jobs_running.inc()
        heartbeat = self._spawn(self._heartbeat(job, stop), f"job-lease-{job.id}")
        try:
            await self._analyse(job, stop)
            await self._finish(job, "succeeded", None)
        except asyncio.CancelledError:
            with suppress(JobStoreUnavailable):  # then its lease lapses and another replica takes it over
                await asyncio.shield(self._release(job))
            raise
        except AnalysisAbandoned:
            await self._finish(job, "cancelled", None)
        except ServiceError as error:
            await self._finish(job, "failed", (error.code, error.message))
        except Exception:
            logger.exception("job %s failed unexpectedly", job.id)
            await self._finish(job, "failed", ("internal_error", "the job failed unexpectedly"))
        finally:
            heartbeat.cancel()
            self._stops.pop(job.id, None)
            self._metrics.jobs_running.dec()

    async def _analyse(self, job: Job, stop: threading.Event) -> None:
        query = PredictQuery.model_validate_json(job.query)
        options = ClipRequest.for_job(query, self._settings)
        files, timings = self.files(job.id, job.attempts), dict[str, float]()
        reporter = ProgressReporter(
            self._store,
            job.id,
            job.attempts,
            options.plan,
            self._settings.jobs_progress_interval_s,
            self._metrics,
            time.monotonic(),
        )
        prompts = validate_prompts(query.prompts, self._settings)
        start = time.perf_counter()
        async with self._memory.hold(self._settings.clip_reservation_bytes):
            results = await self._pipeline.analyse_long(
                files.upload,
                job.container,
                options,
                query.model,
                prompts,
                LongAnalysis(reporter.on_window, stop, timings),
            )
        info = results.analysis.info
        timings["total"] = round((time.perf_counter() - start) * 1000.0, 3)
        smoothing = self._pipeline.smoothing
        await asyncio.to_thread(write_results, files, results, options, smoothing, timings)
        await self._store.call(
            self._store.sync.progress,
            job.id,
            info.frames_analysed,
            info.frames_analysed,
            time.monotonic() - reporter.started,
            job.attempts,
        )

    async def _heartbeat(self, job: Job, stop: threading.Event) -> None:
        """Renew the job's lease; stop the analysis once this attempt no longer owns the job."""
        interval = self._settings.jobs_lease_s / 3
        while not stop.is_set():
            await asyncio.sleep(interval)
            try:
                owned = await self._store.call(self._store.sync.renew, job.id, job.attempts)
            except JobStoreUnavailable:
                continue  # the lease may lapse meanwhile: then another replica takes the job over
            if not owned:
                logger.info(
                    "job %s: attempt %d no longer owns it (cancelled or taken over)", job.id, job.attempts
                )
                stop.set()

    async def _finish(self, job: Job, state: State, error: tuple[str, str] | None) -> None:
        files, settings = self.files(job.id, job.attempts), self._settings
        moved = await self._store.call(
            self._store.sync.finish,
            job.id,
            state,
            time.time(),
            settings.jobs_retention_s,
            error,
            job.attempts,
        )
        if not moved and await self._taken_over(job):
            # Another attempt (another replica) runs it now: the upload is that one's; this attempt's
            # results (nobody will read them) go.
            await asyncio.to_thread(files.remove_attempt)
            return
        # The upload goes once analysed, whatever the outcome; results only when nobody wants them.
        await asyncio.to_thread(files.upload.unlink, True)
        if not moved or state != "succeeded":
            await asyncio.to_thread(files.remove)
        if moved:
            self._metrics.jobs_finished.labels(state).inc()
            logger.info("job %s %s", job.id, state if error is None else f"{state}: {error[0]}")

    async def _taken_over(self, job: Job) -> bool:
        """Whether the job went back to the queue or to another attempt (this one's lease lapsed)."""
        current = await self._store.call(self._store.sync.get, job.id)
        return current is not None and (current.state == "queued" or current.attempts != job.attempts)

    async def _release(self, job: Job) -> None:
        """The gateway stops: the job goes back to the queue for the next start (not counted a failure)."""
        await self._store.call(self._store.sync.release, job.id)

    async def _sweep(self) -> None:
        settings = self._settings
        pause = min(5.0, settings.jobs_retention_s / 4)
        if self._store.sync.shared:
            pause = min(pause, settings.jobs_lease_s / 2)
        while True:
            try:
                await self._store.call(self._expire_and_measure, time.time())
            except JobStoreUnavailable:
                logger.warning("job store unavailable; the sweeper retries in %g s", pause)
            await asyncio.sleep(pause)

    def _take_over(self, now: float) -> None:
        """Shared store: jobs whose worker stopped renewing its lease go back to the queue (any replica)."""
        settings = self._settings
        requeued, failed = self._store.sync.requeue_running(
            settings.jobs_max_attempts, now, settings.jobs_retention_s
        )
        if requeued or failed:
            logger.warning("jobs of a stopped replica: %d queued again, %d failed", requeued, failed)

    def _expire_and_measure(self, now: float) -> None:
        store = self._store.sync
        if store.shared:
            self._take_over(now)
        for job in store.expired(now):
            self.files(job.id).remove()
            store.delete(job.id)
        counts = store.counts()
        for state in ("queued", "running", "succeeded", "failed", "cancelled"):
            self._metrics.jobs.labels(state).set(counts.get(state, 0))
        oldest = store.oldest_queued()
        self._metrics.job_queue_age.set(now - oldest if oldest is not None else 0.0)
