"""Prefect tasks: thin wrappers over :mod:`sora_tasks.core`.

Each task adds what Prefect is good at and nothing else: retries with jittered
exponential backoff for transient failures only, run-logger logging, artifacts,
events; a create is recorded in durable receipts (not a cache), so one request is paid
for once on any machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from .core.pipeline import submit
from .core.receipts import Receipts
from .core.request import VideoRequest
from .core.settings import ApiSettings
from .core.storage import StoredVideo, object_metadata, resolve_destination, store_file
from .leases import holding_lease

P = ParamSpec("P")
R = TypeVar("R")

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


def emit_video_event(event: str, video_id: str, **payload: Any) -> None:
    """``sora.video.<event>`` about one video (resource ``sora.video.<id>``), for automations."""
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


RENDER_LEASE_SECONDS = 120.0
"""A rendering slot's lease: renewed while its holder lives, freed this long after it dies."""


@contextmanager
def rendering_slot(settings: ApiSettings) -> Iterator[None]:
    """Hold one slot of the account's render limit (a Prefect global concurrency limit) while a job renders.

    The slot is leased: Prefect renews it while this process lives and frees it when the
    lease runs out after a crash, so a dead worker never keeps a slot for good.
    """
    if not settings.render_limit_name:
        yield
        return
    with holding_lease(settings.render_limit_name, lease_duration=RENDER_LEASE_SECONDS):
        yield


def before_create(settings: ApiSettings) -> Callable[[], None] | None:
    """The account's create rate limit, taken right before each paid create."""
    name = settings.rate_limit_name
    if not name:
        return None
    return lambda: rate_limit(name, strict=False)


@task(name="create-video", timeout_seconds=300, cache_policy=NO_CACHE, **_transient_retries)
def create_video(
    request: VideoRequest,
    settings: ApiSettings,
    image: PreparedImage | None = None,
    request_id: str | None = None,
    receipts: str | None = None,
    bucket: S3Bucket | None = None,
) -> str:
    """Start one paid job and return its id, or the id of the job an earlier run paid for.

    ``receipts`` (a folder or ``s3://`` prefix; ``bucket`` lends S3 credentials) records
    the job the moment the create answers, so a retry, a rerun or another worker follows
    it instead of paying again. The SDK never re-sends a create by itself.
    """
    client = settings.client()
    context = TaskRunContext.get()
    retrying = context is not None and context.task_run.run_count > 1
    # On a retry, first adopt any job the failed attempt made after all.
    since = context.task_run.created.timestamp() if retrying and context and context.task_run.created else None
    submitted = submit(
        client,
        request,
        image,
        request_id=request_id,
        receipts=Receipts(receipts, bucket_client(bucket)) if receipts else None,
        reconcile_since=since,
        before_create=before_create(settings),
    )
    logger = get_run_logger()
    if submitted.reused:
        logger.info("following %s, paid for by an earlier run of this request", submitted.video_id)
        return submitted.video_id
    logger.info("created %s: %s, %s s, %s", submitted.video_id, request.model, request.seconds, request.size)
    emit_video_event("created", submitted.video_id, model=request.model, seconds=request.seconds, size=request.size)
    return submitted.video_id


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
        emit_video_event("failed", video_id, code=code, message=str(error))
        raise
    if artifact_id and shown < 100:
        update_progress_artifact(artifact_id, 100.0)
    emit_video_event("completed", video_id)
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
    downloaded: DownloadedFile,
    output: str,
    request: VideoRequest,
    bucket: S3Bucket | None = None,
    fingerprint: str | None = None,
) -> StoredVideo:
    """Deliver the file to a local path or S3 (with an S3Bucket block's credentials) and verify what landed."""
    client = bucket_client(bucket)
    destination = resolve_destination(output, video_id=downloaded.video_id, model=request.model)
    metadata = object_metadata(
        downloaded.video_id,
        request.model,
        request.seconds,
        request.size,
        request.prompt_sha256,
        downloaded.sha256,
        fingerprint,
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
    emit_video_event("uploaded", downloaded.video_id, uri=stored.uri, bytes=stored.bytes, sha256=stored.sha256)
    return stored
