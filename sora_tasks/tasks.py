"""Prefect tasks: thin wrappers over :mod:`sora_tasks.core`.

Each task adds what Prefect is good at and nothing else: retries with jittered
exponential backoff for transient failures only, run-logger logging, artifacts,
events; a create is recorded in durable receipts (not a cache), so one request is paid
for once on any machine.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.sync import rate_limit
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event
from prefect.tasks import exponential_backoff
from prefect_aws import S3Bucket

from .blocks import bucket_client
from .core.api.client import DownloadedFile, Variant
from .core.api.request import VideoRequest
from .core.api.settings import ApiSettings
from .core.errors import TransientError, VideoQualityError
from .core.jobs import gate, pipeline, progress
from .core.jobs.pipeline import submit
from .core.media.images import Fit, ImageSource, PreparedImage, prepare_image
from .core.media.quality import Expectation
from .core.storage.claims import register_runs
from .core.storage.destinations import StoredVideo, object_metadata, resolve_destination, store_file
from .core.storage.receipts import Receipts
from .leases import LimitSlots, holding_lease, release_reserved

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


@dataclass(frozen=True)
class RunIdentity:
    """The flow run this code runs in, as automations and artifact keys name it (all None outside a run)."""

    flow_run_id: str | None = None
    flow_run_name: str | None = None
    flow_id: str | None = None
    flow_name: str | None = None
    deployment_id: str | None = None
    deployment_name: str | None = None


def run_identity() -> RunIdentity:
    """This run's flow run, flow and deployment, from the run context (one API read per deployment, cached)."""
    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    if flow_run is None:
        task_context = TaskRunContext.get()  # a task run elsewhere (a Dask worker): its flow run's id only
        flow_run_id = task_context.task_run.flow_run_id if task_context is not None else None
        return RunIdentity(flow_run_id=str(flow_run_id) if flow_run_id else None)
    deployment_id = str(flow_run.deployment_id) if flow_run.deployment_id else None
    return RunIdentity(
        flow_run_id=str(flow_run.id),
        flow_run_name=flow_run.name,
        flow_id=str(flow_run.flow_id),
        flow_name=context.flow.name if context is not None and context.flow is not None else None,
        deployment_id=deployment_id,
        deployment_name=_deployment_name(deployment_id) if deployment_id else None,
    )


def _current_flow_run_id() -> str | None:
    """The flow run a claim is made in (a task elsewhere: its flow run), for another run to check."""
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None:
        return str(context.flow_run.id)
    task_context = TaskRunContext.get()
    return str(task_context.task_run.flow_run_id) if task_context and task_context.task_run.flow_run_id else None


def _flow_run_is_over(flow_run_id: str) -> bool | None:
    """Whether a claim's flow run has ended (it can no longer pay): from the Prefect API; None if unknown."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except Exception:  # unreachable API, unknown run: the claim's age decides instead
        return None
    return state is not None and state.is_final()


# Claims name their flow run, and a run that meets another's claim asks Prefect whether it ended.
register_runs(_current_flow_run_id, _flow_run_is_over)


@lru_cache(maxsize=64)
def _deployment_name(deployment_id: str) -> str | None:
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_deployment(UUID(deployment_id)).name
    except Exception as error:  # a name is a nicety: the id still goes out
        logging.getLogger("sora_tasks").debug("could not read deployment %s: %s", deployment_id, error)
        return None


def run_related(identity: RunIdentity | None = None) -> list[dict[str, str]]:
    """The flow run, its flow and its deployment as an event's related resources.

    Prefect's events worker attaches these from the run context too, but only where a
    run context reaches the emitting thread; named here, automation filters
    (``match_related``) and notification templates (``{{ flow_run.name }}``) always find them.
    """
    identity = identity or run_identity()
    related: list[dict[str, str]] = []
    for kind, resource_id, name in (
        ("flow-run", identity.flow_run_id, identity.flow_run_name),
        ("flow", identity.flow_id, identity.flow_name),
        ("deployment", identity.deployment_id, identity.deployment_name),
    ):
        if resource_id:
            resource = {"prefect.resource.id": f"prefect.{kind}.{resource_id}", "prefect.resource.role": kind}
            if name:
                resource["prefect.resource.name"] = name
            related.append(resource)
    return related


# Prefect's asset key rules (prefect.types.names, the same in 3.8 and 3.9): a lowercase scheme, at most 512
# characters, none of these.
ASSET_KEY_FORBIDDEN = "\n\r\t\0 #?&%\"'<>[]{}|\\^`"
ASSET_KEY_MAX = 512


def asset_key(uri: str) -> str:
    """The Prefect asset key of a stored object: its ``s3://`` URI, or ``file://`` and its absolute path.

    Characters Prefect refuses in a key (space, ``%``, ``#``, ``?``, quotes, brackets...)
    become ``_``; a key past 512 characters is cut and ends in a digest of the whole. The
    exact URI always travels in the event's payload.
    """
    key = uri if uri.startswith("s3://") else "file://" + Path(uri).expanduser().absolute().as_posix()
    key = "".join("_" if char in ASSET_KEY_FORBIDDEN else char for char in key)
    if len(key) > ASSET_KEY_MAX:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        key = f"{key[: ASSET_KEY_MAX - 17]}-{digest}"
    return key


def object_resource(uri: str) -> dict[str, str]:
    """A delivered object as a related resource (role ``object``), named by its exact URI."""
    return {"prefect.resource.id": asset_key(uri), "prefect.resource.role": "object", "prefect.resource.name": uri}


def emit_video_event(
    event: str, video_id: str, *, uri: str | None = None, identity: RunIdentity | None = None, **payload: Any
) -> None:
    """``sora.video.<event>`` about one video (resource ``sora.video.<id>``), for automations:
    created, completed, failed, rejected (it failed the quality check), uploaded.

    Related: the flow run, flow and deployment it happened in (``identity``, taken by
    the flow where the event comes from a thread or process without its context), and
    with ``uri`` the stored object (role ``object``, id = its asset key), so a trigger
    can match ``related`` on any of them.
    """
    related = run_related(identity)
    if uri is not None:
        related.append(object_resource(uri))
        payload = {"uri": uri, **payload}
    emit_event(
        event=f"sora.video.{event}",
        resource={"prefect.resource.id": f"sora.video.{video_id}", "prefect.resource.name": video_id},
        related=related,
        payload=payload,
    )


def emit_materialized(
    uri: str,
    *,
    video_id: str,
    model: str,
    variant: str = "video",
    upstream: Iterable[str] = (),
    **metadata: Any,
) -> None:
    """``prefect.asset.materialization.succeeded`` for a stored object, as ``@materialize`` emits it.

    Emitted directly rather than through a materializing task: a batch row would
    otherwise need a task run per delivered object (three per row), and an asset's key
    (the object's URI) is known only once the video id is. The shape is Prefect's own
    (``AssetContext.emit_events``): resource = the asset key, ``upstream`` assets as
    related resources with role ``asset``, metadata as the payload; the events worker
    adds the flow run and task run from the context.
    """
    key = asset_key(uri)
    emit_event(
        event="prefect.asset.materialization.succeeded",
        resource={"prefect.resource.id": key, "prefect.resource.name": PurePosixPath(key).name},
        related=[{"prefect.resource.id": asset_key(source), "prefect.resource.role": "asset"} for source in upstream],
        payload={"uri": uri, "video_id": video_id, "model": model, "variant": variant, **metadata},
    )


def emit_referenced(uri: str) -> None:
    """``prefect.asset.referenced`` for an input (a batch's manifest), as ``@materialize`` emits for upstream assets."""
    emit_event(event="prefect.asset.referenced", resource={"prefect.resource.id": asset_key(uri)}, related=[])


def announce_delivered(
    delivered: pipeline.Delivered,
    *,
    upstream: Iterable[str] = (),
    identity: RunIdentity | None = None,
    **payload: Any,
) -> None:
    """A delivered video's events: each stored object materialized as an asset (``upstream``
    assets before the video, the video before its previews), then ``sora.video.uploaded``
    (with ``payload`` added) for automations.

    Events, not task runs: they cost no Prefect API call of their own (they share the
    events worker's websocket), where a materializing task per object would add three
    task runs to every batch row or swept job.
    """
    emit_materialized(
        delivered.uri,
        video_id=delivered.video_id,
        model=delivered.model,
        upstream=upstream,
        bytes=delivered.bytes,
        sha256=delivered.sha256,
    )
    for variant, uri in (("thumbnail", delivered.thumbnail_uri), ("spritesheet", delivered.spritesheet_uri)):
        if uri:
            emit_materialized(
                uri, video_id=delivered.video_id, model=delivered.model, variant=variant, upstream=[delivered.uri]
            )
    emit_video_event(
        "uploaded",
        delivered.video_id,
        uri=delivered.uri,
        bytes=delivered.bytes,
        sha256=delivered.sha256,
        model=delivered.model,
        thumbnail_uri=delivered.thumbnail_uri,
        spritesheet_uri=delivered.spritesheet_uri,
        identity=identity,
        **payload,
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
def rendering_slot(settings: ApiSettings, *, reserved: str | None = None) -> Iterator[None]:
    """Hold one slot of the account's render limit (a Prefect global concurrency limit) while a job renders.

    The slot is leased: Prefect renews it while this process lives and frees it when the
    lease runs out after a crash, so a dead worker never keeps a slot for good.
    ``reserved``: the row's key, whose slot was taken ahead (:func:`render_slots`).
    """
    if not settings.render_limit_name:
        yield
        return
    with holding_lease(settings.render_limit_name, lease_duration=RENDER_LEASE_SECONDS, reserved=reserved):
        yield


def render_slots(settings: ApiSettings) -> LimitSlots | None:
    """The account's render limit as this process uses it; None without one."""
    name = settings.render_limit_name
    return LimitSlots(name, RENDER_LEASE_SECONDS) if name else None


def release_reserved_slot(key: str) -> None:
    """The row ``key`` is over: a render slot reserved for it and not used goes to this process's next row."""
    release_reserved(key)


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


@task(name="check-video", timeout_seconds=900, cache_policy=NO_CACHE, **_transient_retries)
def check_video(
    downloaded: DownloadedFile,
    output_uri: str,
    settings: ApiSettings,
    expected: Expectation,
    bucket: S3Bucket | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """The downloaded video against the quality policy (``settings.quality``), before anything is stored.

    Returns the report (None under ``off``). A video the policy rejects is kept beside the
    output (``x.rejected.mp4``), ``sora.video.rejected`` is emitted, and
    :class:`VideoQualityError` is raised: nothing reaches ``output_uri``.
    """
    logger = get_run_logger()
    try:
        report = gate.check_download(
            downloaded,
            output_uri,
            settings.quality_policy,
            expected,
            s3=bucket_client(bucket),
            metadata=metadata,
            warn=logger.warning,
        )
    except VideoQualityError as error:
        emit_rejected(error)
        raise
    if report is not None:
        logger.info("quality of %s: %s", downloaded.video_id, report.summary())
    return report.as_dict() if report is not None else None


def emit_rejected(error: VideoQualityError, *, identity: RunIdentity | None = None, **payload: Any) -> None:
    """``sora.video.rejected``: a paid video failed the quality check (code, checks, figures, where it is kept)."""
    emit_video_event(
        "rejected",
        error.video_id,
        uri=error.rejected_uri,
        code=error.code,
        message=str(error),
        checks=error.checks,
        figures=error.figures,
        identity=identity,
        **payload,
    )


@task(name="upload-video", timeout_seconds=3600, cache_policy=NO_CACHE, **_transient_retries)
def upload_video(
    downloaded: DownloadedFile,
    output: str,
    request: VideoRequest,
    bucket: S3Bucket | None = None,
    fingerprint: str | None = None,
    announce: bool = True,
) -> StoredVideo:
    """Deliver the file to a local path or S3 (with an S3Bucket block's credentials) and verify what landed.

    The stored object is materialized as a Prefect asset (key: its URI); with
    ``announce`` a video's ``sora.video.uploaded`` event is emitted here (a caller that
    delivers previews too emits it once they are stored).
    """
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
    emit_materialized(
        stored.uri, video_id=downloaded.video_id, model=request.model, bytes=stored.bytes, sha256=stored.sha256
    )
    if announce:
        emit_video_event("uploaded", downloaded.video_id, uri=stored.uri, bytes=stored.bytes, sha256=stored.sha256)
    return stored


@task(name="deliver-previews", timeout_seconds=900, cache_policy=NO_CACHE)
def deliver_previews(
    video_id: str, video_uri: str, model: str, settings: ApiSettings, bucket: S3Bucket | None = None
) -> dict[str, str]:
    """The thumbnail and spritesheet beside the video at ``video_uri`` (variant -> URI), each materialized
    as an asset downstream of the video. Best effort: a preview the server lacks is skipped with a warning.

    One task run for both (the core retries transient failures itself): previews add two
    downloads and two uploads to a delivery, not four task runs.
    """
    logger = get_run_logger()
    stored = pipeline.deliver_previews(
        settings.client(), video_id, video_uri, model=model, s3=bucket_client(bucket), warn=logger.warning
    )
    for variant, uri in stored.items():
        emit_materialized(uri, video_id=video_id, model=model, variant=variant, upstream=[video_uri])
    if stored:
        logger.info("previews of %s: %s", video_id, ", ".join(stored.values()))
    return stored
