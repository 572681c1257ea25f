"""The sync flow: one flow run owns a video from create to delivery."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext
from prefect_aws import S3Bucket

from sora_tasks.blocks import VideosApi, load_api, presigning_client
from sora_tasks.core.api.client import DownloadedFile
from sora_tasks.core.api.pricing import price_per_second
from sora_tasks.core.api.request import VideoRequest
from sora_tasks.core.api.settings import ApiSettings
from sora_tasks.core.errors import StorageError, VideoNotReadyError, VideoQualityError
from sora_tasks.core.jobs.gate import record_rejection, through_quality_retries
from sora_tasks.core.jobs.pipeline import Delivered, find_delivered, job_key, record_delivery
from sora_tasks.core.media.images import PreparedImage
from sora_tasks.core.media.quality import Expectation
from sora_tasks.core.spec import VideoSpec, as_spec, build_request
from sora_tasks.core.storage.destinations import (
    MAX_PRESIGN_SECONDS,
    check_presign_seconds,
    object_metadata,
    presign,
    resolve_destination,
)
from sora_tasks.core.storage.ledger import Ledger
from sora_tasks.core.storage.receipts import Receipts
from sora_tasks.core.storage.receipts import default_location as default_receipts
from sora_tasks.core.summary import artifact_key as summary_key
from sora_tasks.core.summary import video_markdown
from sora_tasks.core.text import markdown_link, markdown_text
from sora_tasks.tasks import (
    check_video,
    create_video,
    deliver_previews,
    download_video,
    emit_video_event,
    preprocess_image,
    rendering_slot,
    run_identity,
    upload_video,
    wait_for_video,
)

from .delivery import Delivery, resolve_delivery
from .hooks import keep_for_collection
from .results import VideoResult

DEFAULT_OUTPUT = "videos/{video_id}.mp4"


@dataclass(frozen=True)
class Summary:
    """Where and how a run leaves its summary artifact."""

    key: str | None = None  # None: derived from the run (see run_artifact_key)
    url_seconds: int = MAX_PRESIGN_SECONDS  # how long the summary's presigned links work
    prices: dict[str, float] | None = None  # None: the provider's, else OpenAI's list prices


def deliver(
    video_id: str,
    request: VideoRequest,
    settings: ApiSettings,
    delivery: Delivery,
    video: dict[str, Any],
    timings: dict[str, float],
    *,
    previews: bool = False,
    fingerprint: str | None = None,
    summary: Summary | None = None,
    artifacts: bool = True,
    expected: Expectation | None = None,
    rejected: list[str] | None = None,
) -> VideoResult:
    """Download, check and store a completed video (and its previews); the local copy is removed only once stored.

    The download is checked against ``settings.quality`` before anything is stored (the
    ``check-video`` task): a video the policy rejects is kept beside the output and
    :class:`VideoQualityError` is raised. ``expected``: what was asked (default: the
    request's size and length). Leaves the run's keyed summary artifact and emits
    ``sora.video.uploaded`` once everything is stored, with the previews' URIs in its
    payload. ``artifacts=False``: the caller writes the summary itself (a derived
    video's, a storyboard's). ``rejected``: the jobs a quality retry rejected before this one.
    """
    started = time.monotonic()
    downloaded: DownloadedFile = download_video(video_id, settings)
    timings["download"] = time.monotonic() - started
    started = time.monotonic()
    target = resolve_destination(delivery.output, video_id=video_id, model=request.model).uri
    metadata = object_metadata(
        video_id, request.model, request.seconds, request.size, request.prompt_sha256, downloaded.sha256
    )
    quality = check_video(
        downloaded,
        target,
        settings,
        expected or Expectation.of(request.size, request.seconds),
        delivery.bucket,
        metadata,
    )
    if quality is not None:
        timings["check"] = time.monotonic() - started
    started = time.monotonic()
    try:
        stored = upload_video(downloaded, delivery.output, request, delivery.bucket, fingerprint, announce=False)
    except StorageError as error:
        expires = video.get("expires_at")
        if expires:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
            error.args = (f"{error.args[0]}; `sora-video collect {video_id}` can deliver it until {when}",)
        raise
    timings["upload"] = time.monotonic() - started
    Path(downloaded.path).unlink(missing_ok=True)
    shown: dict[str, str] = {}
    if previews:
        started = time.monotonic()
        shown = deliver_previews(video_id, stored.uri, request.model, settings, delivery.bucket)
        timings["previews"] = time.monotonic() - started
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
        thumbnail_uri=shown.get("thumbnail"),
        spritesheet_uri=shown.get("spritesheet"),
        quality=quality,
        rejected=rejected or [],
    )
    emit_video_event(
        "uploaded",
        video_id,
        uri=stored.uri,
        bytes=stored.bytes,
        sha256=stored.sha256,
        model=request.model,
        thumbnail_uri=result.thumbnail_uri,
        spritesheet_uri=result.spritesheet_uri,
    )
    if artifacts:
        report(result, delivery, settings, summary or Summary())
    return result


def run_artifact_key(given: str | None) -> str:
    """``given`` (slugified), else this run's deployment (``flow-deployment``), else its flow's name."""
    identity = run_identity()
    return summary_key(given, identity.flow_name or "sora-video", identity.deployment_name)


def report(result: VideoResult, delivery: Delivery, settings: ApiSettings, summary: Summary) -> None:
    """The keyed summary (thumbnail, video, model, size, cost, timings) and a link to the video.

    Never fails a run: the video is delivered (and would otherwise be recorded for
    collection again); a summary that cannot be written is a warning.
    """
    try:
        write_summary(result, delivery, settings, summary)
    except Exception as error:
        get_run_logger().warning("summary artifact of %s not written: %s", result.video_id, error)


def write_summary(result: VideoResult, delivery: Delivery, settings: ApiSettings, summary: Summary) -> None:
    s3 = presigning_client(delivery.bucket)
    urls = {
        name: presign(uri, summary.url_seconds, s3) if uri else None
        for name, uri in (
            ("video", result.uri),
            ("thumbnail", result.thumbnail_uri),
            ("spritesheet", result.spritesheet_uri),
        )
    }
    prices = summary.prices if summary.prices is not None else (settings.profile.price_per_second or None)
    request = VideoRequest(prompt="-", model=result.model, seconds=str(result.duration), size=result.resolution)
    price = price_per_second(request, prices)
    paid = result.how in ("created", "recreated")
    cost = (price * result.duration if paid else 0.0) if price is not None else None
    create_markdown_artifact(
        key=run_artifact_key(summary.key),
        markdown=video_markdown(result.model_dump(), urls=urls, cost_usd=cost, timings=result.timings),
        description=markdown_text(f"Video {result.video_id}: {result.duration} s {result.resolution} {result.model}"),
    )
    # The link a browser can follow (presigned for S3), its text the video's URI; both escaped.
    create_markdown_artifact(
        markdown=markdown_link(result.uri, urls["video"]), description=markdown_text(f"Video {result.video_id}")
    )


@flow(name="generate-video", log_prints=True)
def generate_video(
    video: VideoSpec | str,
    output: str = DEFAULT_OUTPUT,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    thumbnail: bool | None = None,
    ledger: str | None = None,
    previews: bool = True,
    artifact_key: str | None = None,
    preview_url_seconds: int = MAX_PRESIGN_SECONDS,
    quality: str | None = None,
) -> VideoResult:
    """A prompt (``video``: a :class:`VideoSpec`, or just the prompt) -> an MP4 at ``output``.

    ``output`` is a path or ``s3://bucket/key``, or with ``destination`` (a prefect-aws
    ``S3Bucket`` block or its name) a key inside that bucket; it may use ``{video_id}``,
    ``{date}`` and ``{model}``. ``api`` is a :class:`VideosApi` block or its name (None:
    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``). An identical request (same spec and
    ``request_id``) is served by the first job, never paid twice. A video paid for but
    not delivered (deadline passed, upload failed) is recorded in ``ledger`` (default
    ``$SORA_LEDGER``) for the ``collect-pending`` flow.

    ``quality`` (None: the block's, default ``fail``): what happens to a finished video
    that fails the quality check (black, frozen, too short, wrong size, ...): ``fail``
    keeps it beside the output (``x.rejected.mp4``) and fails the run, ``warn`` delivers
    it with a warning, ``off`` does not check, ``retry=N`` pays for up to N new jobs.

    ``previews``: the thumbnail and the spritesheet are delivered beside the video
    (``x.mp4`` -> ``x.thumbnail.webp``, ``x.spritesheet.jpg``) where the server serves
    them, else skipped with a warning. ``thumbnail`` is the seed's name for it: when
    given, it decides (``thumbnail=False``: no previews). The run's summary artifact
    (thumbnail, model, size, cost, timings, quality figures) is kept under ``artifact_key``,
    by default the deployment's full name (``generate-video-adhoc``) or the flow's
    (``generate-video``); its S3 links are presigned for ``preview_url_seconds``
    (at most 7 days).
    """
    spec = as_spec(video)
    settings = load_api(api).with_quality(quality)
    request = build_request(spec, settings)
    summary = Summary(run_artifact_key(artifact_key), check_presign_seconds(preview_url_seconds))
    if thumbnail is not None:
        get_run_logger().info(
            "thumbnail=%s is the older name of previews=%s (thumbnail and spritesheet)", thumbnail, thumbnail
        )
        previews = thumbnail
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
    job = Job(request, settings, delivery, receipts, receipts_at, prepared, api, ledger)
    return with_quality_retries(
        settings,
        receipts,
        spec.request_id,
        lambda request_id: job_key(client.base_url, request, prepared, request_id),
        lambda key, request_id, rejected: make_video(
            job, key, request_id, dict(timings), previews=previews, summary=summary, rejected=rejected
        ),
    )


R = TypeVar("R", bound=VideoResult)


def with_quality_retries(
    settings: ApiSettings,
    receipts: Receipts,
    request_id: str | None,
    key_of: Callable[[str | None], str],
    make: Callable[[str, str | None, list[str]], R],
) -> R:
    """``make(key, request_id, rejected)`` once, or under ``retry=N`` until a video passes the quality check
    (``rejected``: the ids of the jobs rejected before this attempt, for its result and summary).

    Retry k is the request with request id ``<id>#quality-retry-k`` (``key_of`` gives its
    receipt key): a job of its own, so a rerun follows it; a job an earlier run rejected
    is gone past without downloading it again. Each rejection is marked in its receipt;
    the last one is raised, naming the jobs rejected before it.
    """
    policy = settings.quality_policy
    logger = get_run_logger()

    def attempt(_: int, attempt_id: str | None, rejected: list[VideoQualityError]) -> R:
        key = key_of(attempt_id)
        try:
            return make(key, attempt_id, [error.video_id for error in rejected])
        except VideoQualityError as error:
            record_rejection(receipts, key, error)
            raise

    return through_quality_retries(
        policy,
        request_id,
        earlier=lambda attempt_id: receipts.find(key_of(attempt_id)),
        make=attempt,
        log=logger,
    )


@dataclass(frozen=True)
class Job:
    """What one run's attempts share: the request, where it goes, its receipts and its ledger."""

    request: VideoRequest
    settings: ApiSettings
    delivery: Delivery
    receipts: Receipts
    receipts_at: str
    prepared: PreparedImage | None
    api: VideosApi | str | None
    ledger: str | None


def make_video(
    job: Job,
    key: str,
    request_id: str | None,
    timings: dict[str, float],
    *,
    previews: bool,
    summary: Summary,
    rejected: list[str],
) -> VideoResult:
    """One job for the request (``request_id``: the spec's, or a quality retry's): found delivered,
    followed, or made; then delivered. A video failing the quality check raises (never the ledger)."""
    request, settings, delivery, receipts = job.request, job.settings, job.delivery, job.receipts
    done = find_delivered(receipts, key, delivery.output, model=request.model, s3=delivery.s3_client())
    if done is not None:
        get_run_logger().info("already delivered at %s (video %s): nothing to pay for", done.uri, done.video_id)
        result = already_delivered(done)
        report(result, delivery, settings, summary)
        return result

    with rendering_slot(settings):
        started = time.monotonic()
        video_id = create_video(request, settings, job.prepared, request_id, job.receipts_at, delivery.bucket)
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
                video_id = create_video(request, settings, job.prepared, request_id, job.receipts_at, delivery.bucket)
                rendered = waiter(video_id, settings)
            timings["wait"] = time.monotonic() - started
        except Exception as error:
            keep_for_collection(error, video_id, request, delivery, settings, job.api, job.ledger)
            raise
    expected = Expectation.of(request.size, request.seconds, job.prepared.data if job.prepared else None)
    try:
        result = deliver(
            video_id,
            request,
            settings,
            delivery,
            rendered,
            timings,
            previews=previews,
            fingerprint=key,
            summary=summary,
            expected=expected,
            rejected=rejected,
        )
    except Exception as error:
        keep_for_collection(error, video_id, request, delivery, settings, job.api, job.ledger)
        raise
    record_delivery(receipts, key, result)
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None and context.flow_run.run_count > 1:
        # An earlier attempt of this run failed and recorded the video; it is delivered now.
        Ledger(job.ledger).remove(video_id)
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
        thumbnail_uri=done.thumbnail_uri,
        spritesheet_uri=done.spritesheet_uri,
    )
