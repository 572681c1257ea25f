"""Videos made from other videos: remix, edit and extend, each delivered like ``generate_video``; characters.

The source is a video id (a video the server made), a local MP4, or an ``s3://`` MP4
(fetched to a temporary file and uploaded). Every guarantee of the sync flow holds:
the input is checked before anything is paid; the job is recorded in a receipt the
moment it is answered, so a rerun follows it, an already delivered output is skipped
with no API call, and a job the server lost is made again; a paid video that could not
be delivered goes to the ledger for ``collect-pending``; the quality check (``quality``:
fail, warn, off, retry=N) before anything is stored; events, artifacts, a
:class:`~sora_tasks.flows.results.DerivedResult`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect_aws import S3Bucket

from sora_tasks.blocks import VideosApi, bucket_client, load_api
from sora_tasks.core.api.references import check_id, check_name, video_source
from sora_tasks.core.api.settings import ApiSettings
from sora_tasks.core.errors import VideoNotReadyError
from sora_tasks.core.jobs.derived import (
    DerivedJob,
    DerivedOperation,
    DerivedRequest,
    FetchedSource,
    check_derived,
    check_support,
    fetch_source,
    is_s3_source,
    request_of,
)
from sora_tasks.core.jobs.pipeline import find_delivered, job_key, record_delivery
from sora_tasks.core.storage.destinations import split_s3_uri
from sora_tasks.core.storage.ledger import Ledger
from sora_tasks.core.storage.receipts import Receipts
from sora_tasks.core.storage.receipts import default_location as default_receipts
from sora_tasks.derive_tasks import derive_video, fetch_source_video
from sora_tasks.tasks import rendering_slot, wait_for_video

from .delivery import Delivery, resolve_delivery
from .generate import DEFAULT_OUTPUT, Summary, already_delivered, deliver, report, with_quality_retries
from .hooks import keep_for_collection
from .results import DerivedResult


@flow(name="remix-video", log_prints=True)
def remix_video(
    video_id: str,
    prompt: str,
    output: str = DEFAULT_OUTPUT,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    previews: bool = True,
    ledger: str | None = None,
    request_id: str | None = None,
    quality: str | None = None,
) -> DerivedResult:
    """A new video from the finished video ``video_id`` and a new ``prompt`` (its size and length).

    ``output``, ``api``, ``destination``, ``previews``, ``ledger``, ``quality`` as in
    ``generate_video``; ``request_id`` makes an otherwise identical request a new, separately paid job.
    """
    return derive("remix", video_id, prompt, None, output, api, destination, previews, ledger, request_id, quality)


@flow(name="edit-video", log_prints=True)
def edit_video(
    source: str,
    prompt: str,
    output: str = DEFAULT_OUTPUT,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    previews: bool = True,
    ledger: str | None = None,
    request_id: str | None = None,
    quality: str | None = None,
) -> DerivedResult:
    """``source`` (a video id, a local MP4 or an ``s3://`` MP4) edited per ``prompt``; same size and length."""
    return derive("edit", source, prompt, None, output, api, destination, previews, ledger, request_id, quality)


@flow(name="extend-video", log_prints=True)
def extend_video(
    source: str,
    prompt: str,
    duration: int | str,
    output: str = DEFAULT_OUTPUT,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    previews: bool = True,
    ledger: str | None = None,
    request_id: str | None = None,
    quality: str | None = None,
) -> DerivedResult:
    """``source`` (a video id, a local MP4 or an ``s3://`` MP4) followed by a new ``duration``-second
    segment (4, 8, 12, 16 or 20) per ``prompt``: one video whose duration is the sum."""
    return derive("extend", source, prompt, duration, output, api, destination, previews, ledger, request_id, quality)


def derive(
    operation: DerivedOperation,
    source: str,
    prompt: str,
    duration: int | str | None,
    output: str,
    api: VideosApi | str | None,
    destination: S3Bucket | str | None,
    previews: bool,
    ledger: str | None,
    request_id: str | None,
    quality: str | None = None,
) -> DerivedResult:
    """The body the three flows share: check, fetch the source, follow or make the job, deliver."""
    settings = load_api(api).with_quality(quality)
    # Everything that costs nothing first: fields, the provider's support, the destination.
    check_derived(operation, prompt, duration)
    source = source.strip() if isinstance(source, str) else source
    if is_s3_source(source):
        split_s3_uri(source)
        check_support(settings.profile, operation, "upload")
    else:
        check_support(settings.profile, operation, "id" if video_source(source, field="source").video_id else "upload")
    delivery = resolve_delivery(output, destination)
    client = settings.client()
    fetched = fetch_source_video(source, delivery.bucket) if is_s3_source(source) else FetchedSource(source)
    try:
        request = DerivedRequest.build(operation, prompt, fetched.source, duration=duration)
        return _derive(request, source, settings, delivery, client.base_url, api, previews, ledger, request_id)
    finally:
        fetched.cleanup()


def _derive(
    request: DerivedRequest,
    source: str,
    settings: ApiSettings,
    delivery: Delivery,
    base_url: str,
    api: VideosApi | str | None,
    previews: bool,
    ledger: str | None,
    request_id: str | None,
) -> DerivedResult:
    receipts_at = default_receipts(delivery.output)
    receipts = Receipts(receipts_at, delivery.s3_client())
    return with_quality_retries(
        settings,
        receipts,
        request_id,
        lambda attempt_id: job_key(base_url, request, request_id=attempt_id),
        lambda key, attempt_id, rejected: _derive_once(
            request, source, settings, delivery, receipts, receipts_at, key, api, previews, ledger, attempt_id, rejected
        ),
    )


def _derive_once(
    request: DerivedRequest,
    source: str,
    settings: ApiSettings,
    delivery: Delivery,
    receipts: Receipts,
    receipts_at: str,
    key: str,
    api: VideosApi | str | None,
    previews: bool,
    ledger: str | None,
    request_id: str | None,
    rejected: list[str],
) -> DerivedResult:
    logger = get_run_logger()
    earlier = receipts.find(key)
    model = earlier.model if earlier is not None else settings.model
    done = find_delivered(receipts, key, delivery.output, model=model, s3=delivery.s3_client())
    if done is not None:
        logger.info("already delivered at %s (video %s): nothing to pay for", done.uri, done.video_id)
        result = _result(already_delivered(done).model_dump(), request, source)
        report(result, delivery, settings, Summary())
        return result

    timings: dict[str, float] = {}
    with rendering_slot(settings):
        started = time.monotonic()
        job: DerivedJob = derive_video(request, settings, request_id, receipts_at, delivery.bucket)
        timings["create"] = time.monotonic() - started
        logger.info("video id %s (keep it: `sora-video collect %s` recovers it)", job.video_id, job.video_id)
        try:
            started = time.monotonic()
            waiter = wait_for_video.with_options(timeout_seconds=settings.max_wait + 120)
            try:
                rendered = waiter(job.video_id, settings)
            except VideoNotReadyError as error:
                if error.status != "not_found":
                    raise
                # A recorded job the server no longer knows: pay for a fresh one rather than fail forever.
                logger.warning("recorded video %s is gone from the server; making a new one", job.video_id)
                receipts.forget(key)
                job = derive_video(request, settings, request_id, receipts_at, delivery.bucket)
                job = DerivedJob(job.video_id, job.model, job.seconds, job.size, "recreated")
                rendered = waiter(job.video_id, settings)
            timings["wait"] = time.monotonic() - started
        except Exception as error:
            keep_for_collection(error, job.video_id, job.as_request(request.prompt), delivery, settings, api, ledger)
            raise
    made = request_of(rendered, request.prompt)
    try:
        delivered = deliver(
            job.video_id,
            made,
            settings,
            delivery,
            rendered,
            timings,
            previews=previews,
            fingerprint=key,
            artifacts=False,
            rejected=rejected,
        )
    except Exception as error:
        keep_for_collection(error, job.video_id, made, delivery, settings, api, ledger)
        raise
    result = _result({**delivered.model_dump(), "how": job.how}, request, source)
    record_delivery(receipts, key, result)
    report(result, delivery, settings, Summary())
    context = FlowRunContext.get()
    if context is not None and context.flow_run is not None and context.flow_run.run_count > 1:
        Ledger(ledger).remove(job.video_id)  # an earlier attempt of this run recorded it; delivered now
    return result


def _result(fields: dict[str, Any], request: DerivedRequest, source: str) -> DerivedResult:
    return DerivedResult(**fields, operation=request.operation, source=str(source))


@flow(name="create-character")
def create_character(
    name: str,
    video: str,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
) -> dict[str, Any]:
    """A reusable character from ``video`` (a local MP4, an ``s3://`` MP4, or a video id where the
    server takes one); returns ``{"id", "name", "created_at"}``. Sent once: characters cannot be
    listed, so an ambiguous failure is reported, not retried (a retry could make a second one).
    ``destination``: an S3Bucket block whose credentials read an ``s3://`` video in its bucket."""
    settings = load_api(api)
    name = check_name(name)
    profile = settings.profile
    profile.require("characters")
    video = video.strip()
    kind = "upload" if is_s3_source(video) else video_source(video).kind
    profile.require("characters", source="id" if kind == "id" else "upload")
    client = settings.client()
    bucket = None
    if is_s3_source(video) and destination is not None:
        from sora_tasks.blocks import load_bucket

        block = load_bucket(destination)
        bucket = block if block is not None and split_s3_uri(video)[0] == block.bucket_name else None
    fetched = fetch_source(video, s3=bucket_client(bucket)) if is_s3_source(video) else FetchedSource(video)
    try:
        source = fetched.source if isinstance(fetched.source, str) and kind == "id" else Path(fetched.source)
        character = client.create_character(name=name, video=source)
    finally:
        fetched.cleanup()
    get_run_logger().info("character %s (%s) created", character.id, character.name)
    return character.model_dump(mode="json", exclude_none=True)


@flow(name="get-character")
def get_character(character_id: str, api: VideosApi | str | None = None) -> dict[str, Any]:
    """A character by id: ``{"id", "name", "created_at"}``."""
    settings = load_api(api)
    character_id = check_id(character_id, "character_id", "an id such as char_123")
    settings.profile.require("characters")
    return settings.client().get_character(character_id).model_dump(mode="json", exclude_none=True)
