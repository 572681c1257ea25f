"""Async mode: submit now, deliver later, with no flow run held while videos render.

``submit_video(..., ledger=...)`` records each job; ``collect_pending`` (deployed on
a schedule) sweeps the ledger, delivers what finished, reports what failed, and
leaves the rest for the next sweep. A run takes seconds whatever the render time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect_aws import S3Bucket

from sora_tasks.blocks import VideosApi, bucket_client, load_api, load_bucket
from sora_tasks.core.errors import ConfigurationError
from sora_tasks.core.jobs import pipeline
from sora_tasks.core.jobs.sweep import DEFAULT_WORKERS, SweepScope, summary, sweep
from sora_tasks.core.storage.ledger import Ledger, PendingVideo
from sora_tasks.tasks import announce_delivered, emit_video_event, run_identity

T = TypeVar("T")


@flow(name="collect-pending")
def collect_pending(
    ledger: str | None = None,
    limit: int | None = None,
    api: VideosApi | str | None = None,
    workers: int = DEFAULT_WORKERS,
    previews: bool = True,
    outputs: str | None = None,
) -> list[dict[str, Any]]:
    """Deliver every finished video recorded in ``ledger``; one row per record looked at.

    Records are data, never configuration (see :class:`~sora_tasks.core.jobs.sweep.SweepScope`):
    a record made with a saved ``VideosApi`` block is collected through that block; any other
    through ``api`` (a block or its name; None: ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``),
    and only when it was made on that same server: a record for another server is
    ``skipped`` (kept, reported, never contacted). ``outputs`` (a folder or ``s3://``
    prefix): where records may deliver; by default an ``s3://`` ledger's records write only
    into its own bucket (or their S3Bucket block's), never a local file on this worker.

    ``workers`` videos are delivered at once; ``limit`` records at most are looked at
    (None: the whole ledger), in listing order (an S3 ledger's is by video id), not oldest
    first: the ledger is read as the sweep goes, never whole.
    ``previews``: each video's thumbnail and spritesheet go beside it (two small downloads
    more per video; ``False`` drains faster when the assets are about to expire).

    The deliveries run inside this flow run, not as task runs of their own: two task
    runs a video cost more than the download and upload at thousands of videos, and
    finished assets live only about an hour. Transient download and upload failures are
    retried with backoff all the same (the core's retries); anything else leaves the
    record for the next sweep. Each video is checked with the quality setting its record
    names (else the block's): one that fails is ``rejected``, kept beside its output as
    ``x.rejected.mp4``, and its record removed, so no sweep delivers it as good. One
    table artifact and one summary line for the sweep; one log line per record, and the
    ``sora.video.uploaded`` / ``sora.video.failed`` / ``sora.video.rejected`` events per video.
    """
    logger = get_run_logger()
    book = Ledger(ledger)
    fallback = load_api(api)
    blocks = SavedBlocks()
    identity = run_identity()  # the sweep's threads have no run context: their events name the run from here

    scope = SweepScope(fallback.resolved_base_url, book.location, outputs)

    def deliver(record: PendingVideo) -> str:
        # The record's output is already the full path or s3:// URI; a block lends its credentials.
        bucket = blocks.get(record.destination_block, load_bucket) if record.destination_block else None
        scope.admit(record, block_root=_block_root(bucket) if bucket is not None else None)
        settings = blocks.get(record.api_block, load_api) if record.api_block else fallback
        s3 = blocks.get(record.destination_block, _bucket_s3_client) if record.destination_block else None
        # Checked as it was submitted to be (else the block's setting); a sweep never pays, so
        # under retry=N a failing video is rejected, kept beside its output, and its record goes.
        quality = settings.with_quality(record.quality).quality_policy
        # This worker thread's client for these settings (ApiSettings.client keeps one per thread).
        delivered = pipeline.collect(
            settings.client(), record.video_id, record.output, s3=s3, previews=previews, quality=quality
        )
        announce_delivered(delivered, identity=identity)
        return delivered.uri

    seen: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        seen.append(row)
        if row["outcome"] in ("failed", "rejected"):
            emit_video_event(
                row["outcome"],
                row["video_id"],
                uri=row.get("rejected_uri"),
                identity=identity,
                code=row.get("code"),
                message=row["detail"],
            )
        logger.info("%s: %s (%s)", row["video_id"], row["outcome"], row["detail"])

    try:
        rows = sweep(book, deliver, workers=workers, limit=limit, on_row=report)
    finally:  # a sweep stopped half-way still reports what it did
        if seen:
            create_table_artifact(table=seen, description=f"collect-pending sweep of {book.location}")
        logger.info("collect-pending: %s", summary(seen) or f"nothing pending in {book.location}")
    return rows


def _bucket_s3_client(name: str) -> Any:
    return bucket_client(load_bucket(name))


def _block_root(bucket: S3Bucket) -> str:
    """Where a saved S3Bucket block writes: its bucket, under its folder."""
    folder = (bucket.bucket_folder or "").strip("/")
    return f"s3://{bucket.bucket_name}/{folder + '/' if folder else ''}"


class SavedBlocks:
    """Saved blocks the records name, each loaded once per sweep and shared by its worker threads.

    A name that fails to load fails the same way for every record naming it, without
    asking the Prefect API again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[tuple[Callable[[str], Any], str], Any] = {}

    def get(self, name: str, load: Callable[[str], T]) -> T:
        key = (load, name)
        with self._lock:  # the first worker to need a block loads it; the others wait for it
            if key not in self._loaded:
                try:
                    self._loaded[key] = load(name)
                except ConfigurationError as error:
                    self._loaded[key] = error
            loaded = self._loaded[key]
        if isinstance(loaded, ConfigurationError):
            raise ConfigurationError(str(loaded))  # a fresh exception: threads must not share one
        return loaded  # type: ignore[no-any-return]
