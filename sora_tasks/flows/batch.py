"""Batch generation for data teams: a manifest in, one delivered video per row out.

Each row is one task run that makes or finds its video through the core's durable
receipts, so a row is never paid for twice: not on a retry, not on a rerun tomorrow,
not on another worker. Rows run on the flow's task runner (threads by default, Dask
when set), at most ``max_in_flight`` rendering per process and at most the account's
``render_limit_name`` slots across every worker; creates pass the ``rate_limit_name``
limit. With ``spread``, the rows are cut into blocks that the parent and flow runs of the
shard deployment, on whatever workers serve its pool, take one at a time (see
``spread``), and the parent writes one table of every row. A bad or failed row is
reported, never allowed to sink the others; the cost is estimated before anything is
paid for.
"""

from __future__ import annotations

import gc
import queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectFuture, as_completed, wait
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote
from prefect_aws import S3Bucket
from pydantic import BaseModel, Field

from sora_tasks.blocks import (
    VideosApi,
    bucket_client,
    key_in_bucket,
    load_api,
    load_bucket,
    presigning_client,
)
from sora_tasks.core.api.pricing import estimate_cost, price_per_second
from sora_tasks.core.api.settings import ApiSettings
from sora_tasks.core.errors import BatchFailedError, InvalidRequestError, VideoQualityError
from sora_tasks.core.jobs.manifest import InvalidRow, ManifestRow, load_manifest
from sora_tasks.core.jobs.pipeline import produce
from sora_tasks.core.jobs.rows import invalid_record, row_record
from sora_tasks.core.jobs.slots import forget, holding_slot
from sora_tasks.core.media.images import prepare_image
from sora_tasks.core.storage.destinations import (
    MAX_PRESIGN_SECONDS,
    check_bucket,
    check_presign_seconds,
    list_uris,
    presign,
    resolve_destination,
)
from sora_tasks.core.storage.listing import Listing, forget_listings, shared_listing, take_listing
from sora_tasks.core.storage.receipts import Receipts
from sora_tasks.core.storage.receipts import default_location as default_receipts
from sora_tasks.core.summary import artifact_key as summary_key
from sora_tasks.core.summary import batch_markdown, batch_totals, estimate_markdown, table_rows
from sora_tasks.core.text import markdown_text, shorten
from sora_tasks.tasks import (
    RunIdentity,
    announce_delivered,
    before_create,
    emit_referenced,
    emit_rejected,
    emit_video_event,
    release_reserved_slot,
    render_slots,
    rendering_slot,
    retry_on_transient,
    run_identity,
)

from .delivery import saved_name
from .spread import IDLE_PATIENCE, Block, BlockTaker, RowBlocks, ShardRows, Spread, run_spread

DEFAULT_OUTPUT_PREFIX = "videos/batch"
# A row's outcome shows the start of its prompt (the manifest has the rest) and of its error.
ROW_ERROR_CHARS = 1000
# The batch progress artifact moves in steps of this many percentage points.
BATCH_PROGRESS_STEP = 10.0


class RowPaths(BaseModel):
    """Where a manifest's rows may reach: a manifest is data, and may come from elsewhere."""

    allow_outside_prefix: bool = Field(
        default=False, description="Rows may write outside output_prefix (absolute paths, other buckets, '..')."
    )
    image_roots: list[str] = Field(
        default_factory=list,
        description="Folders or s3:// prefixes row images may come from, besides the manifest's own folder.",
    )


@dataclass(frozen=True)
class RowContext:
    """What every row of one run shares; plain data, so any task runner can ship it."""

    settings: ApiSettings
    receipts: str
    batch_key: str  # names this run's per-process rendering slots and listings
    max_in_flight: int
    bucket: S3Bucket | None = None
    output_prefix: str = ""
    previews: bool = True
    manifest: str = ""  # the upstream asset of every video
    # The batch's flow run, flow and deployment, for the rows' events: a row on a Dask
    # worker has no flow run context to find them in.
    identity: RunIdentity | None = None


def listed_outputs(shared: RowContext, s3: Any) -> Listing | None:
    """What already existed under the output prefix, listed once per process and batch (see core.listing).

    Receipts are not listed: a receipt is looked up right before each create, because
    another run of the same rows (a shard orphaned by a killed parent, still creating)
    may write one at any moment, and a listing taken at the start would miss it and pay
    again. An output missing from the listing only means its receipt is then consulted.
    """
    if not shared.output_prefix.startswith("s3://"):
        return None
    prefix = shared.output_prefix.rstrip("/") + "/"
    return shared_listing(shared.batch_key, prefix, lambda: take_listing(list_uris(prefix, s3), prefix=prefix))


@task(
    name="generate-row",
    task_run_name="row-{row.number}",
    cache_policy=NO_CACHE,  # idempotency lives in the receipts, not in a cache
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on_transient,
)
def generate_row(row: ManifestRow, shared: RowContext) -> dict[str, Any]:
    """One row in one task run: find it delivered, follow its paid job, or make it; then deliver.

    A transient failure that outlasts the SDK's and boto3's retries makes Prefect retry
    the whole row; the receipt written when the create answered makes the retry follow
    the same job (tested with injected faults), and a create whose answer was lost is
    reconciled against the server's job list.
    """
    settings = shared.settings
    reserved = f"{shared.batch_key}:{row.number}"  # a spread's row may find its render slot taken ahead
    try:
        s3 = bucket_client(shared.bucket)
        in_bucket = shared.bucket is not None and shared.receipts.startswith(f"s3://{shared.bucket.bucket_name}/")
        receipts = Receipts(shared.receipts, s3 if in_bucket else None)
        context = TaskRunContext.get()
        retrying = context is not None and context.task_run.run_count > 1
        since = context.task_run.created.timestamp() if retrying and context and context.task_run.created else None
        # A retry asks S3 directly: another process may have written since the listing.
        outputs = None if retrying else listed_outputs(shared, s3)
        prepared = prepare_image(row.image, row.request.size, fit=row.fit) if row.image else None
        delivered = produce(
            settings.client(),
            row.request,
            row.output,
            image=prepared,
            request_id=row.request_id,
            receipts=receipts,
            max_wait=settings.max_wait,
            poll_interval=settings.poll_interval,
            s3=s3,
            # This process's cap first, then the account's slot: no slot is leased while queueing here.
            admitted=lambda: holding_slot(shared.batch_key, shared.max_in_flight),
            rendering=lambda: rendering_slot(settings, reserved=reserved),
            before_create=before_create(settings),
            reconcile_since=since,
            outputs=outputs,
            previews=shared.previews,
            watcher=settings.watcher(),  # status reads shared by every row of this process: pages of the job list
            quality=settings.quality_policy,
            on_rejected=lambda error, left: rejected_row(error, left, row, shared),
        )
    finally:
        release_reserved_slot(reserved)  # not used (already delivered, say): the next row's
    if delivered.how != "already delivered":
        # The manifest is upstream of every video made from it.
        announce_delivered(
            delivered,
            upstream=[shared.manifest] if shared.manifest else [],
            identity=shared.identity,
            how=delivered.how,
            manifest=shared.manifest or None,
        )
    return {
        "video_id": delivered.video_id,
        "uri": delivered.uri,
        "how": delivered.how,
        "thumbnail_uri": delivered.thumbnail_uri,
        "spritesheet_uri": delivered.spritesheet_uri,
        "quality": quality_cell(delivered.quality),
        "rejected": list(delivered.rejected),
        "rejected_paid": delivered.rejected_paid,
    }


def rejected_row(error: VideoQualityError, retries_left: int, row: ManifestRow, shared: RowContext) -> None:
    """A row's video failed the quality check and a retry is paid for: said in the log and as an event."""
    logger = get_run_logger()
    logger.warning("row %d: %s; paying for a new job (%d quality retries left)", row.number, error, retries_left)
    emit_rejected(error, identity=shared.identity, row=row.number)


def quality_cell(report: dict[str, Any] | None) -> str | None:
    """The table's quality column: passed, or the failed checks of a video delivered anyway (warn)."""
    if report is None:
        return None
    return "passed" if report.get("passed") else "failed: " + ", ".join(report.get("failures", {}))


@flow(name="generate-videos")
def generate_videos(
    manifest: str,
    output_prefix: str = DEFAULT_OUTPUT_PREFIX,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    max_in_flight: int = 10,
    max_cost_usd: float | None = None,
    prices: dict[str, float] | None = None,
    spread: Spread | None = None,
    shard: ShardRows | None = None,
    state: str | None = None,
    paths: RowPaths | None = None,
    previews: bool = True,
    artifact_key: str | None = None,
    preview_url_seconds: int = MAX_PRESIGN_SECONDS,
    quality: str | None = None,
) -> list[dict[str, Any]]:
    """Generate every row of ``manifest`` (JSONL/CSV, local or s3://) into ``output_prefix``.

    ``api`` is a :class:`VideosApi` block or its name (None: the environment); its
    ``rate_limit_name`` and ``render_limit_name`` are the Prefect limits every worker
    shares. With ``destination`` (an ``S3Bucket`` block or its name) ``manifest`` and
    ``output_prefix`` are keys inside that bucket and folder. ``spread`` runs the rows as
    shards on other workers (see :class:`Spread`); ``shard`` is what the parent hands each
    of them. ``state`` is where receipts of paid jobs live (default: beside the outputs
    in S3, else this machine's ``~/.prefect-sora``). A row stays inside what the run was
    given unless ``paths`` says otherwise (see :class:`RowPaths`).

    ``previews``: each video's thumbnail and spritesheet go beside it (two more
    downloads and uploads per row; skipped, with one warning, where the provider has
    none). The run's summary, a markdown table with a thumbnail, link, status and error
    code per row and the totals, is kept under ``artifact_key`` (default: the
    deployment's full name, e.g. ``generate-videos-nightly-batch``, else
    ``generate-videos``), every row also in the table artifact ``<key>-table``; its S3
    links are presigned for ``preview_url_seconds`` (at most 7 days). Every delivered
    object is materialized as a Prefect asset, downstream of the manifest.

    ``quality`` (None: the block's, default ``fail``): each row's video is checked before
    it is stored; a row whose video fails is ``failed`` with a ``quality_*`` code, its
    video kept beside the row's output (``x.rejected.mp4``, the table's ``rejected_uri``),
    and the other rows go on; ``retry=N`` pays for up to N new jobs per such row.

    Returns the per-row outcome table when every row was delivered (``how`` says whether
    it was created, resumed, recreated or already delivered). Otherwise raises
    :class:`BatchFailedError` (the run ends Failed) with the same table as ``rows``,
    after the table artifact is written and every bad row is logged.
    """
    if max_in_flight < 1:
        raise InvalidRequestError(f"max_in_flight must be at least 1, got {max_in_flight}")
    summary = BatchSummary(run_artifact_key(artifact_key), check_presign_seconds(preview_url_seconds))
    settings = load_api(api).with_quality(quality)
    if previews and not settings.profile.supports_variants:
        get_run_logger().warning(
            "previews skipped: provider %s serves no thumbnail or spritesheet", settings.profile.name
        )
        previews = False
    settings = settings.model_copy(
        update={
            "rate_limit_name": existing_limit(settings.rate_limit_name, "rate"),
            "render_limit_name": existing_limit(settings.render_limit_name, "render"),
        }
    )
    bucket = load_bucket(destination)
    given = {"manifest": manifest, "output_prefix": output_prefix}  # as a shard must be handed them
    if bucket is not None:
        manifest = key_in_bucket(bucket, manifest, what="manifest")
        output_prefix = key_in_bucket(bucket, output_prefix, what="output_prefix")
    state = state or default_receipts(output_prefix)
    rows, invalid = load_manifest(
        manifest,
        output_prefix=output_prefix,
        settings=settings,
        client=bucket_client(bucket),
        allow_outside_prefix=paths.allow_outside_prefix if paths else False,
        image_roots=paths.image_roots if paths else (),
        state=state,
    )
    if shard is not None:
        invalid = []  # the parent reports those
    settings.client()  # a missing key or a malformed URL fails here, before anything is paid
    buckets = {resolve_destination(row.output, video_id="v", model="m").bucket for row in rows} - {None}
    for name in sorted(name for name in buckets if name):
        check_bucket(name, bucket_client(bucket))
    # The provider's own prices unless the caller gave some; none known: OpenAI's table.
    prices = prices if prices is not None else (settings.profile.price_per_second or None)
    if shard is None:
        estimate, unpriced = estimate_cost((row.request for row in rows), prices)
        report_estimate(manifest, rows, invalid, estimate, unpriced, max_cost_usd)
        if max_cost_usd is not None and estimate > max_cost_usd:
            raise InvalidRequestError(
                f"estimated cost ${estimate:.2f} for {len(rows)} videos exceeds max_cost_usd ${max_cost_usd:.2f}; "
                "nothing was submitted"
            )
        # Quality retries are paid jobs too: the batch must fit the limit even if every row needs them all.
        retries = settings.quality_policy.retries if settings.quality_policy.mode == "retry" else 0
        if max_cost_usd is not None and retries and estimate * (1 + retries) > max_cost_usd:
            raise InvalidRequestError(
                f"with quality retry={retries} the batch may cost up to ${estimate * (1 + retries):.2f} "
                f"(${estimate:.2f} and {retries} more job(s) per row), more than max_cost_usd ${max_cost_usd:.2f}; "
                "nothing was submitted (lower the retries or raise the limit)"
            )

    def run_here(blocks: RowBlocks | None, patience: float = IDLE_PATIENCE) -> list[dict[str, Any]]:
        return run_rows(
            rows,
            settings,
            bucket,
            state,
            max_in_flight,
            manifest,
            prices,
            output_prefix,
            previews=previews,
            blocks=blocks,
            patience=patience,
        )

    if spread is not None:
        outcomes = run_spread(
            spread,
            manifest=manifest,
            rows=rows,
            invalid=invalid,
            parameters={
                **given,
                "api": saved_name(api),
                "destination": saved_name(destination),
                "max_in_flight": max_in_flight,
                "prices": prices,
                "state": state,
                "paths": paths.model_dump() if paths else None,
                "previews": previews,
                "preview_url_seconds": summary.url_seconds,
                "quality": quality,
            },
            api=api,
            destination=destination,
            state=state,
            output_prefix=output_prefix,
            client=bucket_client(bucket),
            work=run_here,
            render_limited=bool(settings.render_limit_name),
        )
        if not spread.wait:
            return outcomes
    else:
        outcomes = [invalid_record(bad) for bad in invalid]
        # A shard takes blocks of the batch's rows until none is left; each is recorded for the parent.
        if shard is None:
            outcomes += run_here(None)
        else:
            blocks = shard.blocks(state, bucket_client(bucket))
            outcomes += run_here(blocks)
            blocks.leave()  # the parent need not wait for this run's end
    return finish(outcomes, manifest, summary, bucket)


@dataclass(frozen=True)
class BatchSummary:
    key: str  # the markdown summary's; the table artifact's is ``<key>-table``
    url_seconds: int = MAX_PRESIGN_SECONDS


def run_artifact_key(given: str | None) -> str:
    """``given`` (slugified), else this run's deployment (``flow-deployment``), else its flow's name."""
    identity = run_identity()
    return summary_key(given, identity.flow_name or "generate-videos", identity.deployment_name)


def run_rows(
    rows: list[ManifestRow],
    settings: ApiSettings,
    bucket: S3Bucket | None,
    state: str,
    max_in_flight: int,
    manifest: str,
    prices: dict[str, float] | None,
    output_prefix: str = "",
    *,
    previews: bool = True,
    blocks: RowBlocks | None = None,
    patience: float = IDLE_PATIENCE,
) -> list[dict[str, Any]]:
    """Every row on the flow's task runner (with ``blocks``: the rows of each block this run takes, waiting
    at most ``patience`` seconds for a render slot with nothing under way); one outcome record per row run here.

    The rows' parameters are quoted: they hold no futures, and Prefect would otherwise
    walk every row's request and the shared settings (a block) looking for some.
    """
    shared = RowContext(
        settings,
        state,
        f"batch-{uuid.uuid4().hex}",
        max_in_flight,
        bucket,
        output_prefix,
        previews,
        manifest,
        run_identity(),
    )
    context = FlowRunContext.get()
    flow_runner = context.task_runner if context is not None else None
    in_threads = flow_runner is None or isinstance(flow_runner, ThreadPoolTaskRunner)
    # A slot taken ahead is kept in this process: a row on a Dask worker could not find it.
    slots = render_slots(settings) if in_threads else None
    taker = None if blocks is None else BlockTaker(blocks, slots, shared.batch_key, max_in_flight, patience=patience)
    first_block = taker.next(0) if taker is not None else None
    if taker is not None and first_block is None:
        if slots is not None:
            slots.release_kept()
        return []  # every block is finished or held by another participant, or no render slot came
    freeze_startup_objects()
    if rows:
        emit_referenced(manifest)  # the upstream asset, once per batch (its rows name it in their lineage)
    try:
        if in_threads:
            # Threads: a second one per slot stands ready at the slot gate (its row's task
            # run already started) or delivers a finished video, so freed slots refill at once.
            runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=2 * max_in_flight)
            with runner:

                def submit(row: ManifestRow) -> PrefectFuture[Any]:
                    return runner.submit(generate_row, parameters={"row": quote(row), "shared": quote(shared)})

                if taker is not None and first_block is not None:
                    return run_blocks(taker, first_block, rows, submit, prices)
                futures = [(row, submit(row)) for row in rows]
                track_batch([future for _, future in futures], manifest)
                # wait() records each future's final state; without it, .state asks the
                # Prefect API, whose copy can still say Running (states arrive as events).
                wait([future for _, future in futures])
        else:  # the flow's own runner, e.g. generate_videos.with_options(task_runner=DaskTaskRunner(...))

            def submit(row: ManifestRow) -> PrefectFuture[Any]:
                # Not quoted: a quote() does not survive the trip to a Dask worker (it arrives as a tuple).
                return generate_row.submit(row, shared)

            if taker is not None and first_block is not None:
                return run_blocks(taker, first_block, rows, submit, prices)
            futures = [(row, submit(row)) for row in rows]
            track_batch([future for _, future in futures], manifest)
            wait([future for _, future in futures])
    finally:
        forget(shared.batch_key)
        forget_listings(shared.batch_key)
        if slots is not None:
            slots.release_kept()  # none is kept for a next row: there is none
    return [row_outcome(row, future, prices) for row, future in futures]


def run_blocks(
    taker: BlockTaker,
    first: Block,
    rows: list[ManifestRow],
    submit: Callable[[ManifestRow], PrefectFuture[Any]],
    prices: dict[str, float] | None,
) -> list[dict[str, Any]]:
    """Take blocks while ``taker`` says there is room and a render slot here; record each block as it finishes.

    A block is taken only when this run has room for its rows: one that took every block
    at the start would leave the shards that start later nothing to do. Under a render
    limit, only with a slot in hand: a row taken without one waits in this run while
    another participant may have slots to spare (4 shards each queueing 20 rows left the
    last ones waiting 20 s for slots the others kept handing to their own rows). Blocks
    are recorded beside the loop, so taking the next never waits on those writes.
    """
    by_number = {row.number: row for row in rows}
    finished_rows: queue.Queue[Block | None] = queue.Queue()  # per row: its block if it was the last, else None
    under_way: dict[Block, list[tuple[ManifestRow, PrefectFuture[Any]]]] = {}
    left: dict[Block, int] = {}
    lock = threading.Lock()
    outcomes: list[dict[str, Any]] = []
    running = 0  # rows submitted here and not yet finished

    def on_done(block: Block) -> None:
        with lock:
            left[block] -= 1
            finished_rows.put(block if not left[block] else None)

    def record(block: Block, futures: list[tuple[ManifestRow, PrefectFuture[Any]]]) -> None:
        wait([future for _, future in futures])  # records their final states (see run_rows)
        recorded = [row_outcome(row, future, prices) for row, future in futures]
        taker.blocks.finish(block, recorded)
        with lock:
            outcomes.extend(recorded)

    records: list[Future[None]] = []
    with ThreadPoolExecutor(2, thread_name_prefix="sora-blocks") as recorder:
        block: Block | None = first
        while True:
            while block is not None:
                mine = [by_number[number] for number in range(block.first, block.last + 1) if number in by_number]
                if block.first not in by_number:
                    taker.unused(block)  # an invalid row (the parent reports it): its slot goes to the next
                try:
                    under_way[block] = [(row, submit(row)) for row in mine]
                except BaseException:
                    taker.unused(block)  # its first row's slot, if that row never started
                    raise
                left[block] = len(mine)
                running += len(mine)
                for _, future in under_way[block]:  # a future already done calls back at once
                    future.add_done_callback(lambda _, block=block: on_done(block))  # type: ignore[misc]
                if not mine:
                    recorder.submit(record, block, under_way.pop(block)).result()  # nothing to wait for
                block = taker.next(running)
            if not under_way:
                break
            done = finished_rows.get()
            running -= 1
            if done is not None:
                records.append(recorder.submit(record, done, under_way.pop(done)))
            block = taker.next(running)
    for written in records:
        written.result()  # a block whose outcomes could not be written fails the run, as a row would
    return outcomes


_frozen = False


def freeze_startup_objects() -> None:
    """Once per process: leave what exists now (imported modules, settings) out of garbage collection.

    A batch allocates steadily while hundreds of rows poll, and each full collection
    walked Prefect's and the SDK's whole import graph again: about a tenth of a batch's
    CPU (py-spy). The objects alive at this point live as long as the process anyway.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


def row_outcome(row: ManifestRow, future: PrefectFuture[Any], prices: dict[str, float] | None) -> dict[str, Any]:
    cost = (price_per_second(row.request, prices) or 0.0) * int(row.request.seconds)
    if future.state.is_completed():
        result = future.result()
        # A quality retry's rejected jobs were paid for too.
        jobs = (1 if result["how"] in ("created", "recreated") else 0) + int(result.get("rejected_paid") or 0)
        extra = {"quality": result["quality"]} if result.get("quality") else {}
        if result.get("rejected"):
            extra["rejected"] = ", ".join(result["rejected"])
        return row_record(
            row,
            status="delivered",
            how=result["how"],
            video_id=result["video_id"],
            uri=result["uri"],
            cost_usd=cost * jobs,
            thumbnail_uri=result.get("thumbnail_uri"),
            spritesheet_uri=result.get("spritesheet_uri"),
            **extra,
        )
    error = future.state.result(raise_on_failure=False)
    video_id = getattr(error, "video_id", None)
    message = shorten(f"{type(error).__name__}: {error}", ROW_ERROR_CHARS)
    if isinstance(error, InvalidRequestError) and not video_id:
        # Refused before its create (its image would not decode, say): invalid, nothing paid.
        return row_record(row, status="invalid", code="invalid_row", error=message, cost_usd=0.0)
    code = str(getattr(error, "code", None) or type(error).__name__)
    extra = {}
    if isinstance(error, VideoQualityError):
        # Rejected, not lost: the file is kept beside the row's output and its receipt says so.
        emit_rejected(error, row=row.number)
        extra = {"rejected_uri": error.rejected_uri, "rejected": ", ".join((*error.retried, error.video_id))}
        jobs = 1 + len(error.retried)
    elif video_id:
        emit_video_event("failed", video_id, code=code, message=shorten(str(error), ROW_ERROR_CHARS), row=row.number)
        jobs = 1
    return row_record(
        row,
        status="failed",
        video_id=video_id,
        code=code,
        error=message,
        cost_usd=cost * jobs if video_id else 0.0,
        **extra,
    )


def finish(
    outcomes: list[dict[str, Any]], manifest: str, summary: BatchSummary, bucket: S3Bucket | None = None
) -> list[dict[str, Any]]:
    """The keyed summary and table, one line per bad row, and the run's outcome."""
    logger = get_run_logger()
    outcomes.sort(key=lambda outcome: outcome["row"])
    try:
        report_batch(outcomes, manifest, summary, bucket)
    except Exception as error:  # the rows are delivered; the run's outcome must not hang on its report
        logger.warning("batch summary not written: %s", error)
    for outcome in outcomes:
        if outcome["status"] != "delivered":
            video = f" (video {outcome['video_id']})" if outcome.get("video_id") else ""
            logger.warning("row %d %s%s: %s", outcome["row"], outcome["status"], video, outcome["error"])
    delivered = sum(1 for outcome in outcomes if outcome["status"] == "delivered")
    already = sum(1 for outcome in outcomes if outcome.get("how") == "already delivered")
    logger.info("%d of %d rows delivered (%d already delivered earlier)", delivered, len(outcomes), already)
    if delivered < len(outcomes):
        # An exception, not a Failed state carrying the table: a Python caller gets something it can
        # catch (a list cannot be raised) and the run's state message names the bad rows.
        raise BatchFailedError(outcomes)
    return outcomes


def report_batch(
    outcomes: list[dict[str, Any]], manifest: str, summary: BatchSummary, bucket: S3Bucket | None = None
) -> None:
    """A markdown summary with a thumbnail per row (a table artifact shows cells as text only) and the totals,
    under the run's key; every row, as plain data, in the table artifact ``<key>-table``."""
    s3 = presigning_client(bucket)
    table_key = f"{summary.key}-table"
    totals = batch_totals(outcomes)
    create_markdown_artifact(
        key=summary.key,
        markdown=batch_markdown(
            outcomes, manifest=manifest, presign=lambda uri: presign(uri, summary.url_seconds, s3), table_key=table_key
        ),
        # The UI renders descriptions as markdown too.
        description=markdown_text(
            f"generate-videos: {totals['delivered']} of {totals['rows']} delivered, {totals['failed']} failed, "
            f"{totals['invalid']} invalid; ${totals['cost_usd']:.2f} ({manifest})"
        ),
    )
    create_table_artifact(
        key=table_key, table=table_rows(outcomes), description=markdown_text(f"generate-videos: {manifest}")
    )


def track_batch(futures: list[PrefectFuture[Any]], manifest: str) -> None:
    """Wait for every row, moving one progress artifact for the whole batch.

    One artifact per batch instead of one per row: each update is a Prefect API
    write, and hundreds of them would slow the rows they report on.
    """
    if not futures:
        return
    artifact_id = cast(
        UUID,
        create_progress_artifact(
            progress=0.0,
            description=markdown_text(f"generate-videos: rows finished of {len(futures)} ({manifest})"),
        ),
    )
    shown = 0.0
    for finished, _ in enumerate(as_completed(futures), start=1):
        percent = 100.0 * finished / len(futures)
        if percent - shown >= BATCH_PROGRESS_STEP or finished == len(futures):
            update_progress_artifact(artifact_id, percent)
            shown = percent


def existing_limit(name: str | None, kind: str) -> str | None:
    """The limit's name if it exists on the Prefect server, else None (with a warning).

    Asking Prefect for slots of a missing limit still costs a serialized API call per
    row; checking once here keeps a batch without a limit at full speed.
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
        how = "--limit 2 --slot-decay-per-second 1" if kind == "rate" else "--limit 20"
        get_run_logger().warning(
            "%s limit %r does not exist or is inactive: it is not applied (create it with `prefect gcl create %s %s`)",
            kind,
            name,
            name,
            how,
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
    get_run_logger().info("batch estimate: %d videos, %d s, $%.2f", len(rows), seconds, estimate)
    create_markdown_artifact(
        markdown=estimate_markdown(
            manifest,
            videos=len(rows),
            seconds=seconds,
            invalid=len(invalid),
            estimate=estimate,
            limit=max_cost_usd,
            unpriced=unpriced,
        ),
        description="cost estimate before submitting",
    )


__all__ = ["RowPaths", "ShardRows", "Spread", "generate_videos"]
