"""/v1/jobs: long videos analysed asynchronously (service/jobs). Thin: spool, check, queue, read back."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from service.exceptions import JobNotFinished
from service.http.auth import owner_of
from service.http.dependencies import InferenceDep, JobsDep, SettingsDep
from service.http.errors import openapi_error_responses
from service.http.spool import spool_upload
from service.http.uploads import UPLOAD_REQUEST_BODY
from service.jobs.results import read_result
from service.jobs.states import Job
from service.jobs.views import job_status
from service.schemas import JobList, JobStatus, PredictQuery, VideoPredictResponse
from service.serving.clip import ClipRequest
from service.serving.predict import ensure_image_model
from service.serving.prompting import validate_prompts
from service.vision.video import probe_clip

router = APIRouter(tags=["jobs"])


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobStatus,
    responses=openapi_error_responses(),
    openapi_extra=UPLOAD_REQUEST_BODY,
    summary="Analyse a long video asynchronously",
    description="The same upload forms and query options as a clip on /predict, for videos up to "
    "FER_JOBS_MAX_UPLOAD_BYTES and FER_JOBS_MAX_DURATION_S. Answers 202 at once with the job's status; "
    "`Location` is where to follow it, `result_url` where its clip response will be.",
)
async def submit_job(
    request: Request,
    jobs: JobsDep,
    settings: SettingsDep,
    inference: InferenceDep,
    options: Annotated[PredictQuery, Query()],
) -> JSONResponse:
    validate_prompts(options.prompts, settings)  # refusals that need no upload come first
    await ensure_image_model(inference, options.model)
    job_id = uuid.uuid4().hex
    upload = jobs.files(job_id).upload
    spooled = await spool_upload(request, upload, settings.jobs_upload_timeout_s)
    try:
        limits = ClipRequest.for_job(options, settings).limits
        assert limits is not None
        await asyncio.to_thread(probe_clip, upload, spooled.container, limits)
        job = Job(
            job_id,
            owner_of(request.scope),
            "queued",
            time.time(),
            spooled.container,
            spooled.size,
            options.model_dump_json(),
        )
        await jobs.submit(job)
    except BaseException:
        upload.unlink(missing_ok=True)
        raise
    status = job_status(job, time.time())
    return JSONResponse(
        status.model_dump(mode="json"), status_code=202, headers={"Location": status.status_url}
    )


@router.get("/v1/jobs", response_model=JobList, summary="The caller's jobs, newest first")
async def list_jobs(
    request: Request, jobs: JobsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> JobList:
    rows = await jobs.store.call(jobs.store.sync.owned, owner_of(request.scope), limit)
    now = time.time()
    return JobList(jobs=[job_status(job, now) for job in rows if not job.expires_at or job.expires_at > now])


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobStatus,
    responses=openapi_error_responses(),
    summary="A job's state and progress",
)
async def get_job(request: Request, job_id: str, jobs: JobsDep) -> JobStatus:
    return job_status(await jobs.owned(job_id, owner_of(request.scope)), time.time())


@router.get(
    "/v1/jobs/{job_id}/result",
    response_model=VideoPredictResponse,
    responses=openapi_error_responses(),
    summary="A finished job's clip response (paged timeline), or ?format=csv: one row per frame per person",
)
async def get_result(
    request: Request,
    job_id: str,
    jobs: JobsDep,
    settings: SettingsDep,
    format: Literal["json", "csv"] = "json",
    offset: Annotated[int, Query(ge=0, description="First timeline frame of the page.")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=10000, description="Timeline frames per page.")] = None,
) -> JSONResponse | FileResponse:
    job = await jobs.owned(job_id, owner_of(request.scope))
    if job.state != "succeeded":
        raise JobNotFinished(f"job {job_id!r} is {job.state}; its result exists once it has succeeded")
    files = jobs.files(job_id, job.attempts)  # the attempt the store let finish
    if format == "csv":
        return FileResponse(files.table, media_type="text/csv", filename=f"{job_id}.csv")
    size = limit or settings.jobs_page_size
    body = await asyncio.to_thread(read_result, files, offset, size)
    total = int(body.get("timeline_frames", 0))
    headers = {"X-Timeline-Total": str(total)}
    if offset + size < total:
        headers["Link"] = f'</v1/jobs/{job_id}/result?offset={offset + size}&limit={size}>; rel="next"'
    return JSONResponse(body, headers=headers)


@router.delete(
    "/v1/jobs/{job_id}",
    response_model=JobStatus,
    responses=openapi_error_responses(),
    summary="Cancel a job (if unfinished) and delete its upload and results",
)
async def delete_job(request: Request, job_id: str, jobs: JobsDep) -> JobStatus:
    return job_status(await jobs.cancel(job_id, owner_of(request.scope)), time.time())
