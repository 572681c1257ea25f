"""Endpoints that start from a video: edits, extensions and characters; and file uploads.

An edit is a new job of the source's size and length; an extension is the source
followed by a new segment, one job whose ``seconds`` is the sum. Both take a
completed video by id (``{"id": ...}``, JSON or form) or an uploaded MP4, and count
as paid jobs (``jobs_created``), as create and remix do.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .errors import ApiError, invalid, missing, server_error
from .inputs import MAX_VIDEO_SECONDS, read_body, source_video, validate_prompt
from .state import EmulatorState, SourceVideo

# The SDK's docstring for extend: "allowed values: 4, 8, 12, 16, 20" (its type says 4/8/12).
EXTENSION_SECONDS = ("4", "8", "12", "16", "20")
CHARACTER_NAME_LIMIT = 80
FILE_PURPOSES = (
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
)


def add_operation_routes(app: FastAPI, state: EmulatorState) -> None:
    def new_job(kind: str, prompt: str, source: SourceVideo, seconds: int) -> Response:
        job = state.create_job(
            model=source.model, prompt=prompt, seconds=str(seconds), size=source.size, kind=kind, source=source
        )
        if source.video_id is None:
            source.path.unlink(missing_ok=True)  # the upload; the render has its own copy
        if state.faults.wants("create_then_500", kind):
            raise server_error()
        return JSONResponse(state.describe(job))

    @app.post("/v1/videos/edits")
    async def edit_video(request: Request) -> Response:
        fields, uploads = await read_body(request)
        prompt = str(fields.get("prompt") or "")
        validate_prompt(prompt)
        source = await source_video(state, fields, uploads, purpose="edited")
        return new_job("edit", prompt, source, source.seconds)

    @app.post("/v1/videos/extensions")
    async def extend_video(request: Request) -> Response:
        fields, uploads = await read_body(request)
        prompt = str(fields.get("prompt") or "")
        validate_prompt(prompt)
        if fields.get("seconds") in (None, ""):
            raise missing("seconds")
        seconds = str(fields["seconds"])
        if seconds not in EXTENSION_SECONDS:
            raise invalid("seconds", seconds, EXTENSION_SECONDS)
        source = await source_video(state, fields, uploads, purpose="extended")
        total = source.seconds + int(seconds)
        if total > MAX_VIDEO_SECONDS:
            if source.video_id is None:
                source.path.unlink(missing_ok=True)
            raise ApiError(
                400,
                f"The extended video would last {total} s; at most {MAX_VIDEO_SECONDS} s are allowed.",
                param="seconds",
                code="video_too_long",
            )
        return new_job("extend", prompt, source, total)

    @app.post("/v1/videos/characters")
    async def create_character(request: Request) -> Response:
        fields, uploads = await read_body(request)
        name = str(fields.get("name") or "").strip()
        if not name:
            raise missing("name")
        if len(name) > CHARACTER_NAME_LIMIT:
            raise ApiError(
                400, f"Name is too long: {len(name)} characters, limit {CHARACTER_NAME_LIMIT}.", param="name"
            )
        source = await source_video(state, fields, uploads, purpose="used for a character")
        size = source.path.stat().st_size
        if source.video_id is None:
            source.path.unlink(missing_ok=True)
        return JSONResponse(state.add_character(name, size).as_dict())

    @app.get("/v1/videos/characters/{character_id}")
    async def get_character(character_id: str) -> Response:
        character = state.characters.get(character_id)
        if character is None:
            raise ApiError(
                404, f"Character with id '{character_id}' not found.", param="character_id", code="not_found"
            )
        return JSONResponse(character.as_dict())

    @app.post("/v1/files")
    async def upload_file(request: Request) -> Response:
        fields, uploads = await read_body(request)
        upload = uploads.get("file")
        if upload is None:
            raise missing("file")
        purpose = str(fields.get("purpose") or "")
        if not purpose:
            raise missing("purpose")
        if purpose not in FILE_PURPOSES:
            raise invalid("purpose", purpose, FILE_PURPOSES)
        if not upload.data:
            raise ApiError(400, "The uploaded file is empty.", param="file", code="empty_file")
        return JSONResponse(state.add_file(upload.filename, purpose, upload.data).as_dict())

    @app.get("/v1/files/{file_id}")
    async def retrieve_file(file_id: str) -> Response:
        stored = state.files.get(file_id)
        if stored is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id", code="not_found")
        return JSONResponse(stored.as_dict())
