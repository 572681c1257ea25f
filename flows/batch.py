"""Batch generation for data teams: a manifest in, one delivered video per row out.

Rows fan out on a thread pool capped at ``max_in_flight`` jobs; creates pass a
Prefect global rate limit (``rate_limit_name``) so many workers share one API
quota. A bad or failed row is reported, never allowed to sink the others; the
run then ends with :class:`BatchFailedError` naming them. The cost is estimated
and shown before anything is paid for.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.transactions import CommitMode, transaction
from prefect_aws import S3Bucket

from sora_tasks.blocks import VideosApi, bucket_client, key_in_bucket, load_api, load_bucket
from sora_tasks.core.errors import BatchFailedError, InvalidRequestError
from sora_tasks.core.manifest import InvalidRow, ManifestRow, load_manifest
from sora_tasks.core.pricing import estimate_cost, price_per_second
from sora_tasks.core.settings import ApiSettings
from sora_tasks.core.slots import RenderingSlots, claim_rendering_slot
from sora_tasks.core.storage import check_bucket, resolve_destination
from sora_tasks.tasks import (
    create_video,
    for_worker_threads,
    preprocess_image,
    retry_on_transient,
    wait_for_video,
)

from .delivery import Delivery
from .generate import deliver

DEFAULT_OUTPUT_PREFIX = "videos/batch"
# The batch progress artifact moves in steps of this many percentage points.
BATCH_PROGRESS_STEP = 10.0


# Rows run in the task runner's worker threads, where Prefect timeouts cannot act.
_create_in_thread = for_worker_threads(create_video)


# The slots are a live object, not data: nothing to hash for a cache key.
@task(
    name="generate-row",
    task_run_name="row-{row.number}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on_transient,
)
def generate_row(
    row: ManifestRow, settings: ApiSettings, rendering_slots: RenderingSlots, bucket: S3Bucket | None = None
) -> dict[str, Any]:
    """One row, as two task runs: this one and its paid create.

    The other steps are the sync flow's task functions, called inside this run: a
    task run per step was five runs a row, and at hundreds of rows the Prefect API's
    bookkeeping of them took more CPU than the rows did. Polls and downloads keep the
    SDK's retries and uploads boto3's. A transient failure that outlasts them makes
    Prefect retry the whole row, and the row's create then answers from its cache with
    the same video id, so a retry never pays twice (tested with injected faults).

    create-video claims a slot right before its request and the slot is freed once
    the job stops rendering, so at most ``max_in_flight`` jobs run at the provider;
    starting the next rows and delivering finished ones happen outside the slots.
    """
    prepared = preprocess_image.fn(row.image, row.request.size, row.fit) if row.image else None
    with rendering_slots.for_job():
        # Nested task runs commit their cache records with the parent's transaction,
        # so a row failing later would forget the paid create and a retry would pay
        # again. Eager: the create's record is written as soon as it has the id.
        with transaction(commit_mode=CommitMode.EAGER):
            video_id = _create_in_thread(row.request, settings, prepared, row.request_id)
        # A retried row's create is answered from the cache and claims nothing itself;
        # its job renders all the same, so it counts against the limit here.
        claim_rendering_slot()
        video = wait_for_video.fn(video_id, settings, progress_artifact=False)
    return deliver(
        video_id, row.request, settings, Delivery(row.output, bucket), video, {}, batch_row=True
    ).model_dump()


def _row_record(row: ManifestRow, **fields: Any) -> dict[str, Any]:
    return {
        "row": row.number,
        "prompt": row.request.prompt[:60],
        "model": row.request.model,
        "duration": int(row.request.seconds),
        "resolution": row.request.size,
        **fields,
    }


@flow(name="generate-videos")
def generate_videos(
    manifest: str,
    output_prefix: str = DEFAULT_OUTPUT_PREFIX,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    max_in_flight: int = 10,
    max_cost_usd: float | None = None,
    prices: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Generate every row of ``manifest`` (JSONL/CSV, local or s3://) into ``output_prefix``.

    ``api`` is a :class:`VideosApi` block or its name (None: the environment); its
    ``rate_limit_name`` is the Prefect global concurrency limit every worker shares. With
    ``destination`` (an ``S3Bucket`` block or its name) ``manifest`` and ``output_prefix``
    are keys inside that bucket and folder, read and written with its credentials.

    Returns the per-row outcome table when every row was delivered. Otherwise raises
    :class:`BatchFailedError` (the run ends Failed) with the same table as ``rows``,
    after the table artifact is written and every bad row is logged.
    """
    if max_in_flight < 1:
        raise InvalidRequestError(f"max_in_flight must be at least 1, got {max_in_flight}")
    logger = get_run_logger()
    settings = load_api(api)
    settings = settings.model_copy(update={"rate_limit_name": existing_rate_limit(settings.rate_limit_name)})
    bucket = load_bucket(destination)
    if bucket is not None:
        manifest = key_in_bucket(bucket, manifest, what="manifest")
        output_prefix = key_in_bucket(bucket, output_prefix, what="output_prefix")
    rows, invalid = load_manifest(
        manifest, output_prefix=output_prefix, settings=settings, client=bucket_client(bucket)
    )
    settings.client()  # a missing key or a malformed URL fails here, before anything is paid
    buckets = {resolve_destination(row.output, video_id="v", model="m").bucket for row in rows} - {None}
    for name in sorted(name for name in buckets if name):
        check_bucket(name, bucket_client(bucket))
    # The provider's own prices unless the caller gave some; none known: OpenAI's table.
    prices = prices if prices is not None else (settings.profile.price_per_second or None)
    estimate, unpriced = estimate_cost((row.request for row in rows), prices)
    report_estimate(manifest, rows, invalid, estimate, unpriced, max_cost_usd)
    if max_cost_usd is not None and estimate > max_cost_usd:
        raise InvalidRequestError(
            f"estimated cost ${estimate:.2f} for {len(rows)} videos exceeds max_cost_usd ${max_cost_usd:.2f}; "
            "nothing was submitted"
        )

    outcomes: list[dict[str, Any]] = [
        {"row": bad.number, "prompt": str(bad.fields.get("prompt", ""))[:60], "status": "invalid", "error": bad.error}
        for bad in invalid
    ]
    slots = RenderingSlots(max_in_flight)
    # A second thread per slot stands ready at the slot gate (its row's tasks
    # already started) or delivers a finished video, so freed slots refill at once.
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=2 * max_in_flight)
    with runner:
        futures = []
        for row in rows:
            parameters = {"row": row, "settings": settings, "rendering_slots": slots, "bucket": bucket}
            futures.append((row, runner.submit(generate_row, parameters=parameters)))
        track_batch([future for _, future in futures], manifest)
        # wait() records each future's final state; without it, .state asks the
        # Prefect API, whose copy can still say Running (states arrive as events).
        wait([future for _, future in futures])
    for row, future in futures:
        cost = (price_per_second(row.request, prices) or 0.0) * int(row.request.seconds)
        if future.state.is_completed():
            result = future.result()
            outcomes.append(
                _row_record(row, status="delivered", video_id=result["video_id"], uri=result["uri"], cost_usd=cost)
            )
        else:
            error = future.state.result(raise_on_failure=False)
            outcomes.append(
                _row_record(
                    row,
                    status="failed",
                    video_id=getattr(error, "video_id", None),
                    error=f"{type(error).__name__}: {error}",
                    cost_usd=cost if getattr(error, "video_id", None) else 0.0,
                )
            )
    outcomes.sort(key=lambda outcome: outcome["row"])
    create_table_artifact(table=outcomes, description=f"generate-videos: {manifest}")
    for outcome in outcomes:
        if outcome["status"] != "delivered":
            video = f" (video {outcome['video_id']})" if outcome.get("video_id") else ""
            logger.warning("row %d %s%s: %s", outcome["row"], outcome["status"], video, outcome["error"])
    delivered = sum(1 for outcome in outcomes if outcome["status"] == "delivered")
    logger.info("%d of %d rows delivered", delivered, len(outcomes))
    if delivered < len(outcomes):
        # An exception, not a Failed state carrying the table: a Python caller gets something it can
        # catch (a list cannot be raised) and the run's state message names the bad rows.
        raise BatchFailedError(outcomes)
    return outcomes


def track_batch(futures: list[PrefectFuture[Any]], manifest: str) -> None:
    """Wait for every row, moving one progress artifact for the whole batch.

    One artifact per batch instead of one per row: each update is a Prefect API
    write, and hundreds of them would slow the rows they report on.
    """
    if not futures:
        return
    artifact_id: UUID = create_progress_artifact(  # type: ignore[assignment]
        progress=0.0, description=f"generate-videos: rows finished of {len(futures)} ({manifest})"
    )
    shown = 0.0
    for finished, _ in enumerate(as_completed(futures), start=1):
        percent = 100.0 * finished / len(futures)
        if percent - shown >= BATCH_PROGRESS_STEP or finished == len(futures):
            update_progress_artifact(artifact_id, percent)
            shown = percent


def existing_rate_limit(name: str | None) -> str | None:
    """The limit's name if it exists on the Prefect server, else None (with a warning).

    Asking Prefect for slots of a missing limit still costs a serialized API call per
    create; checking once here keeps a batch without a limit at full speed.
    """
    if not name:
        return None
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            limit = None
    if limit is None or not limit.active:
        get_run_logger().warning(
            "rate limit %r does not exist or is inactive: creates are not rate-limited "
            "(create it with `prefect gcl create %s --limit 2 --slot-decay-per-second 1`)",
            name,
            name,
        )
        return None
    return name


def report_estimate(
    manifest: str,
    rows: list[ManifestRow],
    invalid: list[InvalidRow],
    estimate: float,
    unpriced: list[str],
    max_cost_usd: float | None,
) -> None:
    seconds = sum(int(row.request.seconds) for row in rows)
    lines = [
        f"## Batch estimate for `{manifest}`",
        "",
        f"- videos to submit: {len(rows)} ({seconds} s of video)",
        f"- invalid rows (not submitted): {len(invalid)}",
        f"- estimated cost: **${estimate:.2f}**"
        + (f" (limit ${max_cost_usd:.2f})" if max_cost_usd is not None else ""),
    ]
    if unpriced:
        lines.append(f"- no price known for: {', '.join(unpriced)} (counted as $0)")
    get_run_logger().info("batch estimate: %d videos, %d s, $%.2f", len(rows), seconds, estimate)
    create_markdown_artifact(markdown="\n".join(lines), description="cost estimate before submitting")
