"""The sync flow: one flow run owns a video from create to delivery."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from sora_tasks.blocks import load_bucket_block
from sora_tasks.connection import ApiSettings
from sora_tasks.core.client import DEFAULT_MAX_WAIT, DownloadedFile
from sora_tasks.core.errors import StorageError, VariantUnavailableError, VideoNotReadyError
from sora_tasks.core.images import Fit
from sora_tasks.core.request import VideoRequest
from sora_tasks.core.storage import check_bucket, resolve_destination, validate_output, variant_output
from sora_tasks.tasks import (
    create_video,
    download_video,
    preprocess_image,
    upload_video,
    wait_for_video,
)

from .hooks import record_for_collection
from .results import VideoResult

DEFAULT_OUTPUT = "videos/{video_id}.mp4"


def build_request(
    prompt: str,
    model: str,
    duration: int | str,
    resolution: str,
    settings: ApiSettings,
    extra: dict[str, Any] | None = None,
) -> VideoRequest:
    """Checked against the provider's profile: its models, sizes, durations and extra fields."""
    return settings.profile.build_request(prompt, model=model, duration=duration, resolution=resolution, extra=extra)


def preflight(settings: ApiSettings, output: str | None, s3_bucket_block: str | None = None) -> None:
    """Everything that can be checked for free is checked before the paid create."""
    # Raises on a malformed base URL or a missing key. The client is kept for this
    # thread's tasks, and building it now builds the process's TLS context before
    # a batch's threads all want one.
    settings.client()
    if output is None:
        return
    client = None
    if s3_bucket_block:
        target = load_bucket_block(s3_bucket_block)
        output, client = target.uri(output), target.client
    validate_output(output)
    if output.startswith("s3://"):
        check_bucket(resolve_destination(output, video_id="v", model="m").bucket or "", client)


def deliver(
    video_id: str,
    request: VideoRequest,
    settings: ApiSettings,
    output: str,
    video: dict[str, Any],
    timings: dict[str, float],
    s3_bucket_block: str | None = None,
    batch_row: bool = False,
    thumbnail: bool = False,
) -> VideoResult:
    """Download and store a completed video; the local copy is removed only once stored.

    A batch row calls the task functions inside its own task run and is listed in
    the batch's one table artifact, with no artifacts of its own.
    """
    download, upload = (download_video.fn, upload_video.fn) if batch_row else (download_video, upload_video)
    started = time.monotonic()
    downloaded: DownloadedFile = download(video_id, settings)
    timings["download"] = time.monotonic() - started
    started = time.monotonic()
    try:
        stored = upload(downloaded, output, request, s3_bucket_block)
    except StorageError as error:
        expires = video.get("expires_at")
        if expires:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
            error.args = (f"{error.args[0]}; `sora-video collect {video_id}` can deliver it until {when}",)
        raise
    timings["upload"] = time.monotonic() - started
    Path(downloaded.path).unlink(missing_ok=True)
    result = VideoResult(
        video_id=video_id,
        status=str(video.get("status", "completed")),
        uri=stored.uri,
        bytes=stored.bytes,
        sha256=stored.sha256,
        model=request.model,
        seconds=request.seconds,
        size=request.size,
        expires_at=video.get("expires_at"),
        timings={name: round(value, 3) for name, value in timings.items()},
    )
    if thumbnail:
        result.thumbnail_uri = deliver_thumbnail(video_id, request, settings, output, s3_bucket_block)
    if not batch_row:
        report(result)
    return result


def deliver_thumbnail(
    video_id: str, request: VideoRequest, settings: ApiSettings, output: str, s3_bucket_block: str | None
) -> str | None:
    """Store the thumbnail beside the video, or skip it (warning) where the server has none."""
    try:
        downloaded: DownloadedFile = download_video(video_id, settings, variant="thumbnail")
    except VariantUnavailableError as error:
        get_run_logger().warning("thumbnail skipped: %s", error)
        return None
    try:
        stored = upload_video(
            downloaded, variant_output(output, "thumbnail", downloaded.content_type), request, s3_bucket_block
        )
    finally:
        Path(downloaded.path).unlink(missing_ok=True)
    return stored.uri


def report(result: VideoResult) -> None:
    rows = "\n".join(f"| {name} | {value} |" for name, value in result.model_dump(exclude={"timings"}).items())
    timing_rows = "\n".join(f"| {name} | {seconds:.2f} s |" for name, seconds in result.timings.items())
    create_markdown_artifact(
        markdown=f"## Sora video {result.video_id}\n\n| field | value |\n|---|---|\n{rows}\n\n"
        f"| step | time |\n|---|---|\n{timing_rows}\n",
        description=f"Video {result.video_id}",
    )
    link = result.uri if result.uri.startswith("s3://") else Path(result.uri).as_uri()
    create_link_artifact(link=link, link_text=result.uri, description=f"Video {result.video_id}")


@flow(name="generate-video", log_prints=True, on_failure=[record_for_collection])
def generate_video(
    prompt: str,
    image: str | None = None,
    model: str = "sora-2",
    duration: int = 4,
    resolution: str = "1280x720",
    output: str = DEFAULT_OUTPUT,
    fit: Fit = "cover",
    base_url: str | None = None,
    api_key_secret: str | None = None,
    max_wait: float = DEFAULT_MAX_WAIT,
    poll_interval: float = 5.0,
    request_id: str | None = None,
    ledger: str | None = None,
    s3_bucket_block: str | None = None,
    provider: str | None = None,
    extra_fields: dict[str, Any] | None = None,
    thumbnail: bool = False,
) -> VideoResult:
    """Prompt (and optional reference image) -> MP4 at ``output`` (path or s3://bucket/key).

    ``output`` may use ``{video_id}``, ``{date}`` and ``{model}``. The API key comes
    from ``OPENAI_API_KEY`` or the Prefect Secret block named by ``api_key_secret``.
    ``request_id`` distinguishes deliberate repeats of an identical request, which
    are otherwise served by the first job (never paid twice). If the run fails after
    the video was paid for, the video is recorded in ``ledger`` (default
    ``$SORA_LEDGER`` or ``~/.prefect-sora/pending``) for the ``collect-pending`` flow.
    With ``s3_bucket_block`` (a prefect-aws ``S3Bucket`` block name), ``output`` is a key
    inside that block's bucket and folder, written with the block's credentials.
    ``provider`` names the server kind (see ``sora-video providers``; "auto" asks the
    server); ``extra_fields`` are create fields that provider accepts (e.g. ``seed``).
    ``thumbnail`` also delivers the thumbnail next to the video, where the server has one.
    """
    settings = ApiSettings(
        base_url=base_url,
        api_key_secret=api_key_secret,
        max_wait=max_wait,
        poll_interval=poll_interval,
        provider=provider,
    )
    request = build_request(prompt, model, duration, resolution, settings, extra_fields)
    preflight(settings, output, s3_bucket_block)
    timings: dict[str, float] = {}
    started = time.monotonic()
    prepared = preprocess_image(image, request.size, fit) if image else None
    timings["preprocess"] = time.monotonic() - started

    started = time.monotonic()
    video_id = create_video(request, settings, prepared, request_id)
    timings["create"] = time.monotonic() - started
    get_run_logger().info("video id %s (keep it: `sora-video collect %s` recovers it)", video_id, video_id)

    started = time.monotonic()
    waiter = wait_for_video.with_options(timeout_seconds=max_wait + 120)
    try:
        video = waiter(video_id, settings)
    except VideoNotReadyError as error:
        if error.status != "not_found":
            raise
        # A cached create pointed at a job the server no longer knows (deleted,
        # expired, server reset): pay for a fresh one rather than fail forever.
        get_run_logger().warning("cached video %s is gone from the server; creating a new one", video_id)
        video_id = create_video.with_options(refresh_cache=True)(request, settings, prepared, request_id)
        video = waiter(video_id, settings)
    timings["wait"] = time.monotonic() - started
    return deliver(video_id, request, settings, output, video, timings, s3_bucket_block, thumbnail=thumbnail)
