"""The emulator's HTTP surface: OpenAI's Videos API, shaped as openai-python parses it."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from PIL import Image

from .errors import ApiError, server_error
from .errors import invalid as _invalid
from .inputs import image_reference, read_body, reference_object, validate_prompt
from .operations import add_operation_routes
from .state import EmulatorState, Job, RequestRecord

# The service's own tables, kept apart from the client's on purpose: the emulator
# models the server, so a client bug cannot be hidden by sharing one definition.
STANDARD_SIZES = ("720x1280", "1280x720")
PRO_SIZES = (*STANDARD_SIZES, "1024x1792", "1792x1024")
MODEL_SIZES = {
    "sora-2": STANDARD_SIZES,
    "sora-2-2025-10-06": STANDARD_SIZES,
    "sora-2-2025-12-08": STANDARD_SIZES,
    "sora-2-pro": PRO_SIZES,
    "sora-2-pro-2025-10-06": PRO_SIZES,
}
SECONDS = ("4", "8", "12")
VARIANTS = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}
IMAGE_SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# _gate's answer for "drop the connection".
RESET = ApiError(0, "connection reset")


# Endpoint names in the request log and the counters ("POST create", "GET retrieve"...).
# The ones that make a paid job are state.JOB_KINDS: create, remix, edit, extend.
# Where an answer's handler leaves the ids it first reported ended, for the request log.
ENDED_KEY = "sora_emulator.ended"
VIDEO_ENDPOINTS = ("create", "list", "retrieve", "delete", "content", "remix", "edit", "extend", "character")


def endpoint_of(method: str, path: str) -> str:
    if path == "/v1/videos":
        return "create" if method == "POST" else "list"
    if method == "POST" and path == "/v1/videos/edits":
        return "edit"
    if method == "POST" and path == "/v1/videos/extensions":
        return "extend"
    if re.fullmatch(r"/v1/videos/characters(/[^/]+)?", path):
        return "character"
    if re.fullmatch(r"/v1/videos/[^/]+/content", path):
        return "content"
    if re.fullmatch(r"/v1/videos/[^/]+/remix", path):
        return "remix"
    if re.fullmatch(r"/v1/videos/[^/]+", path):
        return "delete" if method == "DELETE" else "retrieve"
    if re.fullmatch(r"/v1/files(/[^/]+)?", path):
        return "file"
    return "other"


def _image_mime(data: bytes) -> str | None:
    for signature, mime in IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def validate_create(prompt: str, model: str, seconds: str, size: str, reference: bytes | None) -> None:
    validate_prompt(prompt)
    if model not in MODEL_SIZES:
        raise _invalid("model", model, tuple(MODEL_SIZES))
    if seconds not in SECONDS:
        raise _invalid("seconds", seconds, SECONDS)
    if size not in MODEL_SIZES[model]:
        raise _invalid("size", size, MODEL_SIZES[model])
    if reference is not None:
        validate_reference(reference, size)


def validate_reference(reference: bytes, size: str) -> None:
    if _image_mime(reference) is None:
        raise ApiError(
            400,
            "Invalid input_reference: supported formats are image/jpeg, image/png and image/webp.",
            param="input_reference",
            code="invalid_image_format",
        )
    try:
        with Image.open(io.BytesIO(reference)) as image:
            actual = f"{image.width}x{image.height}"
            image.load()
    except Exception as error:  # any decode failure is the caller's bad image
        raise ApiError(
            400, f"Invalid input_reference: {error}", param="input_reference", code="invalid_image"
        ) from error
    if actual != size:
        raise ApiError(
            400,
            f"Inpaint image must match the requested width and height (got {actual}, expected {size}).",
            param="input_reference",
            code="invalid_image_size",
        )


def build_app(state: EmulatorState) -> FastAPI:
    app = FastAPI(title="Sora-compatible Videos API emulator", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error.response()

    # First: /v1/videos/characters/{id} must not be taken for /v1/videos/{id}/content.
    add_operation_routes(app, state)

    def existing(video_id: str) -> Job:
        job = state.get(video_id)
        if job is None:
            raise ApiError(404, f"Video with id '{video_id}' not found.", param="video_id", code="not_found")
        return job

    @app.post("/v1/videos")
    async def create_video(request: Request) -> Response:
        fields, uploads = await read_body(request)
        prompt = str(fields.get("prompt", ""))
        model = str(fields.get("model") or "sora-2")
        seconds = str(fields.get("seconds") or "4")
        size = str(fields.get("size") or "720x1280")
        validate_create(prompt, model, seconds, size, None)
        reference = await _reference_bytes(state, fields, uploads)
        if reference is not None:
            validate_reference(reference, size)
        job = state.create_job(model=model, prompt=prompt, seconds=seconds, size=size, reference=reference)
        if state.faults.wants("create_then_500", "create"):
            # The ambiguous failure: the job exists and is billed, the answer is lost.
            raise server_error()
        return JSONResponse(state.describe(job))

    def told(request: Request, job: Job) -> dict[str, Any]:
        """The job as answered, noting in the request log when this answer is the first to say it ended."""
        described = state.describe(job)
        if state.report(job, described):
            request.scope.setdefault(ENDED_KEY, []).append(job.id)
        return described

    @app.get("/v1/videos")
    async def list_videos(request: Request, after: str | None = None, limit: int = 20, order: str = "desc") -> Response:
        jobs = sorted(state.listing(), key=lambda job: job.created_at, reverse=(order != "asc"))
        if after:
            ids = [job.id for job in jobs]
            jobs = jobs[ids.index(after) + 1 :] if after in ids else []
        page = jobs[: max(1, min(limit, 100))]
        data = [told(request, job) for job in page]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(jobs) > len(page),
            }
        )

    @app.get("/v1/videos/{video_id}")
    async def retrieve_video(request: Request, video_id: str) -> Response:
        job = existing(video_id)
        described = told(request, job)
        headers = {}
        if described["status"] in ("queued", "in_progress"):
            headers["openai-poll-after-ms"] = str(state.config.poll_after_ms)
        return JSONResponse(described, headers=headers)

    @app.delete("/v1/videos/{video_id}")
    async def delete_video(video_id: str) -> Response:
        existing(video_id)
        state.delete(video_id)
        return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})

    @app.post("/v1/videos/{video_id}/remix")
    async def remix_video(video_id: str, request: Request) -> Response:
        source = existing(video_id)
        fields, _ = await read_body(request)
        prompt = str(fields.get("prompt", ""))
        validate_create(prompt, source.model, source.seconds, source.size, None)
        job = state.create_job(
            model=source.model,
            prompt=prompt,
            seconds=source.seconds,
            size=source.size,
            reference=source.reference,
            remixed_from=source.id,
            kind="remix",
        )
        if state.faults.wants("create_then_500", "remix"):
            raise server_error()
        return JSONResponse(state.describe(job))

    @app.get("/v1/videos/{video_id}/content")
    async def download_content(video_id: str, variant: str = "video") -> Response:
        job = existing(video_id)
        if variant not in VARIANTS:
            raise _invalid("variant", variant, tuple(VARIANTS))
        described = state.describe(job)
        if described["status"] != "completed":
            raise ApiError(
                400,
                f"Video '{video_id}' is not ready: status is {described['status']}.",
                param="video_id",
                code="video_not_ready",
            )
        if time.time() > described["expires_at"]:
            raise ApiError(404, f"The assets of video '{video_id}' have expired.", code="video_expired")
        assets = job.render.result()
        path = {"video": assets.video, "thumbnail": assets.thumbnail, "spritesheet": assets.spritesheet}[variant]
        if state.faults.wants("cut", "content"):
            return _cut_off_response(path.read_bytes(), VARIANTS[variant])
        return FileResponse(path, media_type=VARIANTS[variant])

    return app


async def _reference_bytes(state: EmulatorState, fields: dict[str, Any], uploads: dict[str, Any]) -> bytes | None:
    """The create's ``input_reference``: an uploaded image, or an {"image_url"} / {"file_id"} object."""
    upload = uploads.get("input_reference")
    given = fields.get("input_reference")
    if upload is not None and given is not None:
        raise ApiError(400, "Give 'input_reference' once: a file or an object.", param="input_reference")
    if upload is not None:
        return bytes(upload.data)
    if given is None:
        return None
    return await image_reference(state, reference_object(given, "input_reference", ("image_url", "file_id")))


class EmulatedCutOff(ConnectionResetError):
    """Raised mid-body so the server drops the connection; filtered from its error log."""


class QuietCutOffs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, EmulatedCutOff) and not isinstance(
            getattr(error, "__cause__", None), EmulatedCutOff
        )


logging.getLogger("uvicorn.error").addFilter(QuietCutOffs())


def _cut_off_response(data: bytes, media_type: str) -> Response:
    """Promise the whole body, send half, then drop the connection."""

    async def half_then_drop() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]
        await asyncio.sleep(0)
        raise EmulatedCutOff("emulated cut-off download")

    return StreamingResponse(half_then_drop(), media_type=media_type, headers={"content-length": str(len(data))})


def wrap_with_gateway(app: ASGIApp, state: EmulatorState) -> ASGIApp:
    """Auth, request-level faults and the request log, in front of the API."""

    async def gateway(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.time()
        state.last_request_at = time.monotonic()
        state.requests_in_flight += 1
        method, path = scope["method"], scope["path"]
        endpoint = endpoint_of(method, path)
        outcome = {"status": 0, "bytes": 0, "recorded": False}

        def record() -> None:
            # Logged before the last body chunk leaves, so a client that has its
            # answer can already see the request in the log and counters.
            if outcome["recorded"]:
                return
            outcome["recorded"] = True
            query = scope.get("query_string", b"").decode()
            state.record(
                RequestRecord(
                    method=method,
                    path=path + (f"?{query}" if query else ""),
                    endpoint=endpoint,
                    status=outcome["status"],
                    bytes=outcome["bytes"],
                    seconds=time.time() - started,
                    at=started,
                    ended=tuple(scope.get(ENDED_KEY, ())),
                )
            )

        slow = False

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                if slow:
                    # The work is done (a create is committed); only the answer is late.
                    await asyncio.sleep(state.faults.slow_seconds)
            elif message["type"] == "http.response.body":
                outcome["bytes"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    record()
            await send(message)

        try:
            rejection = _gate(scope, state, endpoint)
            slow = rejection is None and state.faults.wants("slow", endpoint)
            if rejection is RESET:
                # Promise an answer, then drop the connection (logged with status 0).
                # uvicorn would turn an exception raised before any byte into a 500.
                headers = [(b"content-type", b"application/json"), (b"content-length", b"64")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                raise EmulatedCutOff("emulated connection reset")
            if rejection is not None:
                await rejection.response()(scope, receive, counting_send)
            else:
                await app(scope, receive, counting_send)
        finally:
            state.requests_in_flight -= 1
            state.last_request_at = time.monotonic()
            record()

    return gateway


def _gate(scope: Scope, state: EmulatorState, endpoint: str) -> ApiError | None:
    headers = {key.decode().lower(): value.decode() for key, value in scope["headers"]}
    token = headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not token:
        return ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if state.config.api_key is not None and token != state.config.api_key:
        # Never echo the key back: logs of clients print error messages.
        return ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    if state.config.hosted_shutdown and endpoint in VIDEO_ENDPOINTS:
        # What api.openai.com answers for a route it no longer has.
        return ApiError(404, f"Invalid URL ({scope['method']} {scope['path']})")
    fault = state.faults.request_fault(endpoint)
    if fault == "reset":
        return RESET
    if fault == "429":
        retry_after = state.faults.retry_after_seconds
        return ApiError(
            429,
            "Rate limit reached for requests. Please try again later.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": f"{retry_after:g}", "retry-after-ms": str(int(retry_after * 1000))},
        )
    if fault in ("500", "503"):
        return ApiError(int(fault), "The server had an error while processing your request.", type="server_error")
    return None
