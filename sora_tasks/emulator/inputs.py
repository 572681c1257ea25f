"""What requests carry: bodies (JSON or multipart), reference objects, images by URL, uploaded videos.

The SDK sends uploads as multipart and would send a dict there as bracketed fields
(``input_reference[image_url]=...``); clients working around the SDK send the same
objects in a JSON body. Both are accepted, and a JSON string in a form field too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlparse

import av
import httpx
from fastapi import Request
from starlette.datastructures import UploadFile

from .errors import ApiError, missing
from .state import EmulatorState, SourceVideo

# Form fields (a data: URL, say) may be this large; uploads are not limited here.
MAX_FIELD_BYTES = 64 * 1024 * 1024
MAX_FETCHED_IMAGE_BYTES = 50 * 1024 * 1024
# The longest video an edit, extension or character may start from, and an extension make.
MAX_VIDEO_SECONDS = 120
PROMPT_LIMIT = 32_000
MODEL_FOR_SIZE = {"1024x1792": "sora-2-pro", "1792x1024": "sora-2-pro"}
_BRACKETED = re.compile(r"(\w+)\[(\w+)\]")
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?)(?P<b64>;base64)?,(?P<data>.*)", re.S)


def validate_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise ApiError(400, "Prompt must not be empty.", param="prompt", code="empty_prompt")
    if len(prompt) > PROMPT_LIMIT:
        raise ApiError(400, f"Prompt is too long: {len(prompt)} characters, limit {PROMPT_LIMIT}.", param="prompt")


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


async def read_body(request: Request) -> tuple[dict[str, Any], dict[str, Upload]]:
    """The request's fields and its uploaded files, whether it came as JSON or as a form."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(max_part_size=MAX_FIELD_BYTES)
        fields: dict[str, Any] = {}
        uploads: dict[str, Upload] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads[key] = Upload(value.filename or key, value.content_type or "", await value.read())
                continue
            nested = _BRACKETED.fullmatch(key)
            if nested:
                parent = fields.setdefault(nested[1], {})
                if isinstance(parent, dict):
                    parent[nested[2]] = value
            else:
                fields[key] = value
        return fields, uploads
    raw = await request.body()
    if not raw.strip():
        return {}, {}
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. The API expects a JSON object "
            "(or a multipart/form-data body).",
        )
    return body, {}


def reference_object(value: object, param: str, keys: tuple[str, ...]) -> dict[str, str]:
    """``{"key": "value"}`` with exactly one of ``keys``, from a dict or a JSON string."""
    shape = " or ".join(f'{{"{key}": ...}}' for key in keys)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip().startswith("{") else value
        except ValueError:
            raise ApiError(400, f"Invalid '{param}': not a valid JSON object.", param=param) from None
    if not isinstance(value, dict):
        raise ApiError(
            400, f"Invalid '{param}': expected an uploaded file or an object {shape}.", param=param, code="invalid_type"
        )
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise ApiError(
            400, f"Unknown parameter: '{param}.{unknown[0]}'.", param=f"{param}.{unknown[0]}", code="unknown_parameter"
        )
    given = {key: value[key] for key in keys if value.get(key) is not None}
    if len(given) != 1:
        raise ApiError(400, f"Invalid '{param}': give exactly one of {shape}.", param=param)
    key, text = next(iter(given.items()))
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, f"Invalid '{param}.{key}': expected a non-empty string.", param=f"{param}.{key}")
    return {key: text.strip()}


async def image_reference(state: EmulatorState, reference: dict[str, str]) -> bytes:
    """The image bytes an ``input_reference`` object points at: a data: URL, an http(s) URL or a file."""
    if "file_id" in reference:
        stored = state.files.get(reference["file_id"])
        if stored is None:
            raise ApiError(
                400,
                f"Invalid 'input_reference.file_id': no file with id '{reference['file_id']}' "
                "(upload it first with POST /v1/files).",
                param="input_reference",
                code="invalid_file_id",
            )
        return stored.data
    url = reference["image_url"]
    if url.startswith("data:"):
        return _decode_data_url(url)
    if urlparse(url).scheme in ("http", "https") and urlparse(url).hostname:
        return await _fetch(url, state.config.fetch_timeout_seconds)
    raise ApiError(
        400,
        "Invalid 'input_reference.image_url': expected an http(s) URL or a base64 data: URL.",
        param="input_reference",
        code="invalid_image_url",
    )


def _decode_data_url(url: str) -> bytes:
    match = _DATA_URL.fullmatch(url)
    try:
        if match is None:
            raise ValueError("not a data: URL")
        if match["b64"]:
            return base64.b64decode(match["data"], validate=True)
        return unquote_to_bytes(match["data"])
    except (ValueError, binascii.Error) as error:
        raise ApiError(
            400,
            f"Invalid 'input_reference.image_url': the data: URL could not be decoded ({error}).",
            param="input_reference",
            code="invalid_image_url",
        ) from error


async def _fetch(url: str, timeout: float) -> bytes:
    shown = url if len(url) <= 200 else url[:197] + "..."
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", url) as answer,
        ):
            if answer.status_code >= 400:
                raise ValueError(f"HTTP {answer.status_code}")
            data = bytearray()
            async for chunk in answer.aiter_bytes():
                data += chunk
                if len(data) > MAX_FETCHED_IMAGE_BYTES:
                    raise ValueError(f"larger than {MAX_FETCHED_IMAGE_BYTES // (1024 * 1024)} MB")
            return bytes(data)
    except (httpx.HTTPError, ValueError) as error:
        reason = str(error) or type(error).__name__
        raise ApiError(
            400,
            f"Invalid 'input_reference.image_url': could not fetch {shown}: {reason}.",
            param="input_reference",
            code="image_url_fetch_failed",
        ) from error


async def source_video(
    state: EmulatorState, fields: dict[str, Any], uploads: dict[str, Upload], *, purpose: str
) -> SourceVideo:
    """The ``video`` an edit, extension or character starts from: an uploaded MP4 or a completed job."""
    upload = uploads.get("video")
    if upload is not None:
        if fields.get("video") is not None:
            raise ApiError(400, "Give 'video' once: an uploaded file or an object {\"id\": ...}.", param="video")
        return await _uploaded_source(state, upload)
    if fields.get("video") is None:
        raise missing("video")
    video_id = reference_object(fields["video"], "video", ("id",))["id"]
    job = state.get(video_id)
    if job is None:
        raise ApiError(404, f"Video with id '{video_id}' not found.", param="video", code="not_found")
    status = state.describe(job)["status"]
    if status != "completed":
        raise ApiError(
            400,
            f"Video '{video_id}' is not completed (status: {status}); only a completed video can be {purpose}.",
            param="video",
            code="video_not_completed",
        )
    return SourceVideo(job.render.result().video, job.size, int(job.seconds), job.model, job.id)


async def _uploaded_source(state: EmulatorState, upload: Upload) -> SourceVideo:
    if upload.data[4:8] != b"ftyp":
        raise ApiError(
            400,
            f"Invalid 'video': '{upload.filename}' is not an MP4 (supported format: video/mp4).",
            param="video",
            code="invalid_video_format",
        )
    try:
        width, height, seconds = await asyncio.to_thread(_probe, upload.data)
    except Exception as error:  # any decode failure is the caller's bad video
        raise ApiError(
            400, f"Invalid 'video': '{upload.filename}' cannot be decoded: {error}", param="video", code="invalid_video"
        ) from error
    if seconds > MAX_VIDEO_SECONDS:
        raise ApiError(
            400,
            f"Invalid 'video': {seconds} s is longer than the {MAX_VIDEO_SECONDS} s allowed.",
            param="video",
            code="video_too_long",
        )
    path = state.upload_path()
    path.write_bytes(upload.data)
    size = f"{width}x{height}"
    return SourceVideo(path, size, seconds, MODEL_FOR_SIZE.get(size, "sora-2"))


def _probe(data: bytes) -> tuple[int, int, int]:
    """Width, height and whole seconds (at least 1) of an MP4's first video stream."""
    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            raise ValueError("it has no video stream")
        stream = container.streams.video[0]
        first = next(container.decode(stream), None)
        if first is None:
            raise ValueError("it has no decodable frame")
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            raise ValueError("its duration is unknown")
        width, height = first.width, first.height
    if width % 2 or height % 2:
        raise ValueError(f"its size {width}x{height} is not even")
    return width, height, max(1, round(duration))
