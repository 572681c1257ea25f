"""Prefect tasks: thin wrappers over :mod:`sora_tasks.core`.

Each task adds what Prefect is good at and nothing else: retries with jittered
exponential backoff for transient failures only, run-logger logging, artifacts,
events and, for create, a cache key so one request is paid for once.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.sync import rate_limit
from prefect.context import TaskRunContext
from prefect.events import emit_event
from prefect.tasks import exponential_backoff
from prefect_aws import S3Bucket

from .blocks import bucket_client
from .core import progress
from .core.client import DownloadedFile, Variant
from .core.errors import TransientError
from .core.images import Fit, ImageSource, PreparedImage, prepare_image
from .core.request import VideoRequest
from .core.settings import ApiSettings
from .core.slots import claim_rendering_slot
from .core.storage import StoredVideo, object_metadata, resolve_destination, store_file

P = ParamSpec("P")
R = TypeVar("R")

# Completed assets expire about an hour after completion; a cached create older
# than that would point at a video that can no longer be downloaded.
CREATE_CACHE_EXPIRATION = timedelta(minutes=50)
# Progress artifact granularity in percentage points.
PROGRESS_STEP = 20


def retry_on_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry rate limits, 5xx, dropped connections; never bad input or failed jobs."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False


_transient_retries: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
}


def _emit(event: str, video_id: str, **payload: Any) -> None:
    emit_event(
        event=f"sora.video.{event}",
        resource={"prefect.resource.id": f"sora.video.{video_id}", "prefect.resource.name": video_id},
        payload=payload,
    )


@task(name="preprocess-image", timeout_seconds=120, **_transient_retries)
def preprocess_image(image: ImageSource, size: str, fit: Fit = "cover") -> PreparedImage:
    prepared = prepare_image(image, size, fit=fit)
    get_run_logger().info(
        "reference image %s: %s %s, %d bytes",
        "sent unchanged" if prepared.unchanged else f"fitted ({fit})",
        prepared.mime_type,
        size,
        len(prepared.data),
    )
    return prepared


def create_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same request + same server + same request_id -> same job, across retries and reruns."""
    request: VideoRequest = parameters["request"]
    image: PreparedImage | None = parameters.get("image")
    settings: ApiSettings = parameters["settings"]
    fingerprint = request.fingerprint(
        image_sha256=image.sha256 if image else None, request_id=parameters.get("request_id")
    )
    return f"sora-create-{settings.resolved_base_url}-{fingerprint}"


@task(
    name="create-video",
    timeout_seconds=300,
    cache_key_fn=create_cache_key,
    cache_expiration=CREATE_CACHE_EXPIRATION,
    **_transient_retries,
)
def create_video(
    request: VideoRequest,
    settings: ApiSettings,
    image: PreparedImage | None = None,
    request_id: str | None = None,
) -> str:
    """Start one paid job and return its id. The SDK never re-sends it by itself."""
    claim_rendering_slot()
    if settings.rate_limit_name:
        rate_limit(settings.rate_limit_name, strict=False)
    client = settings.client()
    context = TaskRunContext.get()
    retrying = context is not None and context.task_run.run_count > 1
    # On a retry, first adopt any job the failed attempt made after all.
    since = context.task_run.created.timestamp() if retrying and context and context.task_run.created else None
    video = client.create(request, image, reconcile_since=since)
    get_run_logger().info("created %s: %s, %s s, %s", video.id, request.model, request.seconds, request.size)
    _emit("created", video.id, model=request.model, seconds=request.seconds, size=request.size)
    return video.id


# Its timeout is the flow's max_wait plus a margin, set per call with .with_options().
# NO_CACHE on tasks that take the settings: nothing to reuse, and no key to hash.
@task(name="wait-for-video", cache_policy=NO_CACHE, **_transient_retries)
def wait_for_video(video_id: str, settings: ApiSettings, progress_artifact: bool = True) -> dict[str, Any]:
    """Poll until completed (honouring the server's poll-after hint) and report progress.

    Each artifact update is a write to the Prefect API, so the artifact moves in
    steps of PROGRESS_STEP points; batches turn it off and keep one for the batch.
    """
    logger = get_run_logger()
    artifact_id: UUID | None = None
    if progress_artifact:
        artifact_id = create_progress_artifact(progress=0.0, description=f"Rendering {video_id}")  # type: ignore[assignment]
    last_status, last_progress, shown = "", -1, 0

    def report(video: Any) -> None:
        nonlocal last_status, last_progress, shown
        progress.publish(video)
        if video.progress == last_progress and video.status == last_status:
            return
        if artifact_id and (video.progress - shown >= PROGRESS_STEP or video.status != last_status):
            update_progress_artifact(artifact_id, float(video.progress))
            shown = video.progress
        last_status, last_progress = video.status, video.progress
        logger.info("%s: %s %s%%", video_id, video.status, video.progress)

    client = settings.client()
    try:
        video = client.wait(
            video_id, max_wait=settings.max_wait, poll_interval=settings.poll_interval, on_progress=report
        )
    except Exception as error:
        code = getattr(error, "code", type(error).__name__)
        _emit("failed", video_id, code=code, message=str(error))
        raise
    if artifact_id and shown < 100:
        update_progress_artifact(artifact_id, 100.0)
    _emit("completed", video_id)
    return video.model_dump(mode="json")


@task(name="download-video", timeout_seconds=1800, cache_policy=NO_CACHE, **_transient_retries)
def download_video(
    video_id: str, settings: ApiSettings, variant: Variant = "video", directory: Path | None = None
) -> DownloadedFile:
    """Stream the asset to a local temporary file; size and type are checked."""
    client = settings.client()
    started = time.monotonic()
    downloaded = client.download(video_id, variant=variant, directory=directory)
    get_run_logger().info(
        "downloaded %s %s: %d bytes in %.2fs", video_id, variant, downloaded.bytes, time.monotonic() - started
    )
    return downloaded


@task(name="upload-video", timeout_seconds=3600, cache_policy=NO_CACHE, **_transient_retries)
def upload_video(
    downloaded: DownloadedFile, output: str, request: VideoRequest, bucket: S3Bucket | None = None
) -> StoredVideo:
    """Deliver the file to a local path or S3 (with an S3Bucket block's credentials) and verify what landed."""
    client = bucket_client(bucket)
    destination = resolve_destination(output, video_id=downloaded.video_id, model=request.model)
    metadata = object_metadata(
        downloaded.video_id, request.model, request.seconds, request.size, request.prompt_sha256, downloaded.sha256
    )
    stored = store_file(
        downloaded.path,
        destination,
        sha256=downloaded.sha256,
        content_type=downloaded.content_type or "video/mp4",
        metadata=metadata,
        client=client,
    )
    get_run_logger().info(
        "stored %s at %s (%d bytes, sha256 %s)", downloaded.video_id, stored.uri, stored.bytes, stored.sha256
    )
    _emit("uploaded", downloaded.video_id, uri=stored.uri, bytes=stored.bytes, sha256=stored.sha256)
    return stored


def for_worker_threads(task_: Task[P, R]) -> Task[P, R]:
    """The same task without a Prefect timeout, for task runners' worker threads.

    Prefect cannot enforce ``timeout_seconds`` outside the main thread: it warns on
    every run and spends a watcher thread per run (measured: about 0.2 s per batch
    row on two cores). There the SDK's request timeout, ``max_wait`` and boto3's
    socket timeouts are the bounds instead.
    """
    untimed = task_.with_options()
    untimed.timeout_seconds = None  # with_options() reads None as "keep the current value"
    return untimed
