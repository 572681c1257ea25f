"""The sync flow: one flow run owns a video from create to delivery."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.context import FlowRunContext
from prefect_aws import S3Bucket

from sora_tasks.blocks import VideosApi, load_api
from sora_tasks.core.client import DownloadedFile
from sora_tasks.core.errors import StorageError, VariantUnavailableError, VideoNotReadyError
from sora_tasks.core.ledger import Ledger
from sora_tasks.core.pipeline import Delivered, find_delivered, record_delivery, request_key
from sora_tasks.core.receipts import Receipts
from sora_tasks.core.receipts import default_location as default_receipts
from sora_tasks.core.request import VideoRequest
from sora_tasks.core.settings import ApiSettings
from sora_tasks.core.spec import VideoSpec, as_spec, build_request
from sora_tasks.core.storage import variant_output
from sora_tasks.tasks import (
    create_video,
    download_video,
    preprocess_image,
    rendering_slot,
    upload_video,
    wait_for_video,
)

from .delivery import Delivery, resolve_delivery
from .hooks import keep_for_collection
from .results import VideoResult

DEFAULT_OUTPUT = "videos/{video_id}.mp4"


def deliver(
    video_id: str,
    request: VideoRequest,
    settings: ApiSettings,
    delivery: Delivery,
    video: dict[str, Any],
    timings: dict[str, float],
    *,
    batch_row: bool = False,
    thumbnail: bool = False,
    fingerprint: str | None = None,
    artifacts: bool = True,
) -> VideoResult:
    """Download and store a completed video; the local copy is removed only once stored.

    A batch row calls the task functions inside its own task run and is listed in
    the batch's one table artifact, with no artifacts of its own. ``artifacts=False``:
    the caller reports the result itself (a derived video's, a storyboard's).
    """
    download, upload = (download_video.fn, upload_video.fn) if batch_row else (download_video, upload_video)
    started = time.monotonic()
    downloaded: DownloadedFile = download(video_id, settings)
    timings["download"] = time.monotonic() - started
    started = time.monotonic()
    try:
        stored = upload(downloaded, delivery.output, request, delivery.bucket, fingerprint)
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
        duration=int(request.seconds),
        resolution=request.size,
        expires_at=video.get("expires_at"),
        timings={name: round(value, 3) for name, value in timings.items()},
    )
    if thumbnail:
        result.thumbnail_uri = deliver_thumbnail(video_id, request, settings, delivery)
    if artifacts and not batch_row:
        report(result)
    return result


def deliver_thumbnail(video_id: str, request: VideoRequest, settings: ApiSettings, delivery: Delivery) -> str | None:
    """Store the thumbnail beside the video, or skip it (warning) where the server has none."""
    try:
        downloaded: DownloadedFile = download_video(video_id, settings, variant="thumbnail")
    except VariantUnavailableError as error:
        get_run_logger().warning("thumbnail skipped: %s", error)
        return None
    try:
        output = variant_output(delivery.output, "thumbnail", downloaded.content_type)
        stored = upload_video(downloaded, output, request, delivery.bucket)
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


@flow(name="generate-video", log_prints=True)
def generate_video(
    video: VideoSpec | str,
    output: str = DEFAULT_OUTPUT,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    thumbnail: bool = False,
    ledger: str | None = None,
) -> VideoResult:
    """A prompt (``video``: a :class:`VideoSpec`, or just the prompt) -> an MP4 at ``output``.

    ``output`` is a path or ``s3://bucket/key``, or with ``destination`` (a prefect-aws
    ``S3Bucket`` block or its name) a key inside that bucket; it may use ``{video_id}``,
    ``{date}`` and ``{model}``. ``api`` is a :class:`VideosApi` block or its name (None:
    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``). An identical request (same spec and
    ``request_id``) is served by the first job, never paid twice. A video paid for but
    not delivered (deadline passed, upload failed) is recorded in ``ledger`` (default
    ``$SORA_LEDGER``) for the ``collect-pending`` flow. ``thumbnail`` also delivers the
    thumbnail next to the video, where the server has one.
    """
    spec = as_spec(video)
    settings = load_api(api)
    request = build_request(spec, settings)
    delivery = resolve_delivery(output, destination)
    # Raises on a missing key or a malformed URL before anything is paid; the client is
    # kept for this thread's tasks.
    client = settings.client()
    receipts_at = default_receipts(delivery.output)
    receipts = Receipts(receipts_at, delivery.s3_client())
    timings: dict[str, float] = {}
    started = time.monotonic()
    prepared = preprocess_image(spec.image, request.size, spec.fit) if spec.image else None
    timings["preprocess"] = time.monotonic() - started
    key = request_key(client, request, prepared, spec.request_id)
    done = find_delivered(receipts, key, delivery.output, model=request.model, s3=delivery.s3_client())
    if done is not None:
        get_run_logger().info("already delivered at %s (video %s): nothing to pay for", done.uri, done.video_id)
        result = already_delivered(done)
        report(result)
        return result

    with rendering_slot(settings):
        started = time.monotonic()
        video_id = create_video(request, settings, prepared, spec.request_id, receipts_at, delivery.bucket)
        timings["create"] = time.monotonic() - started
        get_run_logger().info("video id %s (keep it: `sora-video collect %s` recovers it)", video_id, video_id)
        try:
            started = time.monotonic()
            waiter = wait_for_video.with_options(timeout_seconds=settings.max_wait + 120)
            try:
                rendered = waiter(video_id, settings)
            except VideoNotReadyError as error:
                if error.status != "not_found":
                    raise
                # A recorded job the server no longer knows (deleted, expired, server reset):
                # pay for a fresh one rather than fail forever.
                get_run_logger().warning("recorded video %s is gone from the server; creating a new one", video_id)
                receipts.forget(key)
                video_id = create_video(request, settings, prepared, spec.request_id, receipts_at, delivery.bucket)
                rendered = waiter(video_id, settings)
            timings["wait"] = time.monotonic() - started
        except Exception as error:
            keep_for_collection(error, video_id, request, delivery, settings, api, ledger)
            raise
    try:
        result = deliver(video_id, request, settings, delivery, rendered, timings, thumbnail=thumbnail, fingerprint=key)
    except Exception as error:
        keep_for_collection(error, video_id, request, delivery, settings, api, ledger)
        raise
    record_delivery(receipts, key, result)
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None and context.flow_run.run_count > 1:
        # An earlier attempt of this run failed and recorded the video; it is delivered now.
        Ledger(ledger).remove(video_id)
    return result


def already_delivered(done: Delivered) -> VideoResult:
    return VideoResult(
        video_id=done.video_id,
        status="completed",
        uri=done.uri,
        bytes=done.bytes,
        sha256=done.sha256,
        model=done.model,
        duration=int(done.duration) if str(done.duration).isdigit() else 0,
        resolution=done.resolution,
        expires_at=done.expires_at,
        how=done.how,
    )
