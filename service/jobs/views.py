"""A job row as the API shows it (service.schemas.JobStatus)."""

from __future__ import annotations

from service.jobs.states import Job, progress_of
from service.schemas import ErrorDetail, JobProgress, JobStatus


def job_status(job: Job, now: float, prefix: str = "/v1/jobs") -> JobStatus:
    progress = progress_of(job, now)
    error = ErrorDetail(code=job.error_code, message=job.error_message or "") if job.error_code else None
    return JobStatus(
        id=job.id,
        state=job.state,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        expires_at=job.expires_at,
        attempts=job.attempts,
        container=job.container,
        upload_bytes=job.upload_bytes,
        progress=JobProgress(
            frames_analysed=progress.frames_done,
            frames_expected=progress.frames_expected,
            percent=progress.percent,
            elapsed_s=progress.elapsed_s,
            eta_s=progress.eta_s,
        ),
        error=error,
        status_url=f"{prefix}/{job.id}",
        result_url=f"{prefix}/{job.id}/result",
    )
