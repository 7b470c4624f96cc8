"""FerClient (sync) and AsyncFerClient: one method per endpoint, returning the service's own models."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from fer_client.config import ClientSettings
from fer_client.errors import FerError, FerTimeout, FerUnreachable
from fer_client.protocol import (
    DEFAULT_LIMITS,
    PredictOptions,
    RetryState,
    Upload,
    batch_body,
    batch_chunks,
    batch_results,
    checked,
    headers,
    prediction,
    timeout,
)
from service.schemas import (
    BatchLimits,
    HealthResponse,
    JobList,
    JobStatus,
    ModelsResponse,
    PredictResponse,
    VideoPredictResponse,
)

Source = bytes | Path | str
Result = PredictResponse | VideoPredictResponse
ImageResult = PredictResponse | FerError  # one image of a batch: its answer, or its own error


def size_of(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else Path(source).stat().st_size


def limits_of(response: httpx.Response) -> BatchLimits:
    """The server's batch limits; a server that predates GET /v1/limits has the defaults."""
    if response.status_code == 404:
        return DEFAULT_LIMITS
    return BatchLimits.model_validate_json(checked(response).content)


def plan(sources: Sequence[Source], limits: BatchLimits) -> tuple[list[list[int]], list[int]]:
    """The batches to send, and the images too large for any (each sent alone to POST /predict)."""
    chunks = batch_chunks([size_of(source) for source in sources], limits)
    batched = {index for chunk in chunks for index in chunk}
    return chunks, [index for index in range(len(sources)) if index not in batched]


def _settings(base_url: str | None, api_key: str | None, settings: ClientSettings | None) -> ClientSettings:
    chosen = settings or ClientSettings()
    overrides: dict[str, Any] = {}
    if base_url is not None:
        overrides["url"] = base_url
    if api_key is not None:
        overrides["api_key"] = api_key
    return ClientSettings.model_validate({**chosen.model_dump(), **overrides}) if overrides else chosen


class FerClient:
    """Blocking client. ``transport`` lets tests answer with httpx.MockTransport."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        settings: ClientSettings | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = _settings(base_url, api_key, settings)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.settings.url,
            headers=headers(self.settings),
            timeout=timeout(self.settings),
            transport=transport,
        )

    def predict(self, source: Source, options: PredictOptions | None = None) -> Result:
        upload, params = Upload.of(source), (options or PredictOptions()).params()
        return prediction(self._send("POST", "/predict", params=params, files=upload.files()))

    def limits(self) -> BatchLimits:
        """What one JSON batch may carry (GET /v1/limits)."""
        return limits_of(self._send("GET", "/v1/limits"))

    def predict_batch(
        self, sources: Sequence[Source], options: PredictOptions | None = None
    ) -> list[ImageResult]:
        """One POST /v1/predict for these still images: each one's answer or its own error, in order.
        Mind the server's limits (``limits``), or let ``predict_many`` split the images."""
        body = batch_body([Upload.of(source) for source in sources], options or PredictOptions())
        return batch_results(self._send("POST", "/v1/predict", json=body))

    def predict_many(
        self, sources: Sequence[Source], options: PredictOptions | None = None
    ) -> list[ImageResult]:
        """Still images in as few JSON batches as the server's limits allow (one too large for a batch goes
        alone to POST /predict); a batch refused as a whole gives its error to each of its images."""
        chunks, alone = plan(sources, self.limits())
        results: dict[int, ImageResult] = {}
        for chunk in chunks:
            try:
                found = self.predict_batch([sources[i] for i in chunk], options)
            except FerError as error:
                found = [error] * len(chunk)
            results.update(zip(chunk, found, strict=True))
        for index in alone:
            try:
                results[index] = _image(self.predict(sources[index], options))
            except FerError as error:
                results[index] = error
        return [results[index] for index in range(len(sources))]

    def annotate(self, source: Source, options: PredictOptions | None = None, *, png: bool = False) -> bytes:
        upload, params = Upload.of(source), (options or PredictOptions()).params()
        accept = {"Accept": "image/png" if png else "image/jpeg"}
        response = self._send("POST", "/annotate", params=params, files=upload.files(), headers=accept)
        return checked(response).content

    def models(self) -> ModelsResponse:
        return ModelsResponse.model_validate_json(checked(self._send("GET", "/v1/models")).content)

    def health(self) -> HealthResponse:
        """Readiness: a 503 still carries the failing checks, so it is returned rather than raised."""
        response = self._send("GET", "/readyz")
        return HealthResponse.model_validate_json(
            response.content if response.status_code == 503 else checked(response).content
        )

    def submit_job(self, path: Path, options: PredictOptions | None = None) -> JobStatus:
        """A long video as a job: streamed from disk as the raw body (never read whole)."""
        params = httpx.QueryParams(tuple((options or PredictOptions()).params()))
        with path.open("rb") as body:
            response = _guarded(
                lambda: self._http.post(
                    "/v1/jobs", params=params, content=body, headers={"Content-Type": "video/*"}
                )
            )
        return JobStatus.model_validate_json(checked(response).content)

    def job(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate_json(checked(self._send("GET", f"/v1/jobs/{job_id}")).content)

    def jobs(self) -> JobList:
        return JobList.model_validate_json(checked(self._send("GET", "/v1/jobs")).content)

    def cancel_job(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate_json(checked(self._send("DELETE", f"/v1/jobs/{job_id}")).content)

    def job_result(self, job_id: str, *, csv: bool = False) -> bytes:
        """The whole result: the CSV table, or the clip response JSON with its every timeline page."""
        url = f"/v1/jobs/{job_id}/result"
        if csv:
            return checked(self._send("GET", url, params={"format": "csv"})).content
        body = checked(self._send("GET", url, params={"limit": 10000})).json()
        while len(body.get("timeline") or []) < body.get("timeline_frames", 0):
            page = {"offset": len(body["timeline"]), "limit": 10000}
            body["timeline"] += checked(self._send("GET", url, params=page)).json()["timeline"]
        return json.dumps(body).encode()

    def wait_job(
        self, job_id: str, on_status: Callable[[JobStatus], None] = lambda _: None, poll_s: float = 1.0
    ) -> JobStatus:
        """Poll until the job ends, telling ``on_status`` each status seen."""
        while True:
            status = self.job(job_id)
            on_status(status)
            if status.state in ("succeeded", "failed", "cancelled"):
                return status
            self._sleep(poll_s)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        retry = RetryState(self.settings)
        while True:
            response = _guarded(lambda: self._http.request(method, url, **kwargs))
            wait = retry.delay(response)
            if wait is None:
                return response
            self._sleep(wait)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class AsyncFerClient:
    """The same client for asyncio; share one instance across concurrent tasks."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        settings: ClientSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = _settings(base_url, api_key, settings)
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.settings.url,
            headers=headers(self.settings),
            timeout=timeout(self.settings),
            transport=transport,
        )

    async def predict(self, source: Source, options: PredictOptions | None = None) -> Result:
        upload, params = Upload.of(source), (options or PredictOptions()).params()
        return prediction(await self._send("POST", "/predict", params=params, files=upload.files()))

    async def limits(self) -> BatchLimits:
        return limits_of(await self._send("GET", "/v1/limits"))

    async def predict_batch(
        self, sources: Sequence[Source], options: PredictOptions | None = None
    ) -> list[ImageResult]:
        body = batch_body([Upload.of(source) for source in sources], options or PredictOptions())
        return batch_results(await self._send("POST", "/v1/predict", json=body))

    async def predict_many(
        self, sources: Sequence[Source], options: PredictOptions | None = None, *, concurrency: int = 2
    ) -> list[ImageResult]:
        """FerClient.predict_many, with up to ``concurrency`` requests in flight."""
        chunks, alone = plan(sources, await self.limits())
        gate = asyncio.Semaphore(max(1, concurrency))

        async def batch(chunk: list[int]) -> list[ImageResult]:
            async with gate:
                try:
                    return await self.predict_batch([sources[i] for i in chunk], options)
                except FerError as error:
                    return [error] * len(chunk)

        async def single(index: int) -> list[ImageResult]:
            async with gate:
                try:
                    return [_image(await self.predict(sources[index], options))]
                except FerError as error:
                    return [error]

        found = await asyncio.gather(*(batch(c) for c in chunks), *(single(i) for i in alone))
        order = [*(i for chunk in chunks for i in chunk), *alone]
        results = dict(zip(order, (item for part in found for item in part), strict=True))
        return [results[index] for index in range(len(sources))]

    async def annotate(
        self, source: Source, options: PredictOptions | None = None, *, png: bool = False
    ) -> bytes:
        upload, params = Upload.of(source), (options or PredictOptions()).params()
        accept = {"Accept": "image/png" if png else "image/jpeg"}
        response = await self._send("POST", "/annotate", params=params, files=upload.files(), headers=accept)
        return checked(response).content

    async def models(self) -> ModelsResponse:
        return ModelsResponse.model_validate_json(checked(await self._send("GET", "/v1/models")).content)

    async def health(self) -> HealthResponse:
        response = await self._send("GET", "/readyz")
        return HealthResponse.model_validate_json(
            response.content if response.status_code == 503 else checked(response).content
        )

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        retry = RetryState(self.settings)
        while True:
            try:
                response = await self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                raise _translated(exc) from exc
            wait = retry.delay(response)
            if wait is None:
                return response
            await self._sleep(wait)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()


def _image(result: Result) -> ImageResult:
    if isinstance(result, PredictResponse):
        return result
    return FerError(0, "not_a_still", "the file is a clip, not a still image: use predict()")


def _guarded(call: Callable[[], httpx.Response]) -> httpx.Response:
    try:
        return call()
    except httpx.TransportError as exc:
        raise _translated(exc) from exc


def _translated(exc: httpx.TransportError) -> FerTimeout | FerUnreachable:
    """httpx's transport errors as the client's own: a timeout is not retried (the work may be running)."""
    if isinstance(exc, httpx.TimeoutException):
        return FerTimeout(f"no answer within the timeout ({type(exc).__name__})")
    return FerUnreachable(f"cannot reach the service: {exc}")
