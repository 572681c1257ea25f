"""Prefect tasks for jobs made from another video: remix, edit, extend; and fetching a source from S3.

Thin, like :mod:`sora_tasks.tasks`: retries on transient failures only, no cache
(idempotency lives in the durable receipts), and a retry first adopts any job the
failed attempt made after all (``reconcile_since``).
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect_aws import S3Bucket

from .blocks import bucket_client
from .core.api.settings import ApiSettings
from .core.jobs.derived import DerivedJob, DerivedRequest, FetchedSource, fetch_source
from .core.jobs.pipeline import plan_job, submit_job
from .core.storage.destinations import split_s3_uri
from .core.storage.receipts import Receipts
from .tasks import _transient_retries, before_create, emit_video_event


@task(name="fetch-source-video", timeout_seconds=1800, cache_policy=NO_CACHE, **_transient_retries)
def fetch_source_video(source: str, bucket: S3Bucket | None = None) -> FetchedSource:
    """Download an ``s3://`` MP4 to a temporary file (with ``bucket``'s credentials when it is that bucket)."""
    same_bucket = bucket is not None and split_s3_uri(source)[0] == bucket.bucket_name
    fetched = fetch_source(source, s3=bucket_client(bucket) if same_bucket else None)
    if fetched.temporary is not None:
        size = fetched.temporary.stat().st_size
        get_run_logger().info("fetched %s: %d bytes", source, size)
    return fetched


@task(
    name="derive-video",
    task_run_name="{request.operation}-video",
    timeout_seconds=600,
    cache_policy=NO_CACHE,
    **_transient_retries,
)
def derive_video(
    request: DerivedRequest,
    settings: ApiSettings,
    request_id: str | None = None,
    receipts: str | None = None,
    bucket: S3Bucket | None = None,
    key: str | None = None,
) -> DerivedJob:
    """Start one paid remix, edit or extension, or follow the one an earlier run paid for.

    ``receipts`` (a folder or ``s3://`` prefix; ``bucket`` lends S3 credentials) records
    the job the moment it is answered, so a retry, a rerun or another worker follows it.
    ``key``: the receipt key when it is not the request's own (a storyboard's chained one).
    """
    client = settings.client()
    context = TaskRunContext.get()
    retrying = context is not None and context.task_run.run_count > 1
    # On a retry, first adopt any job the failed attempt made after all.
    since = context.task_run.created.timestamp() if retrying and context and context.task_run.created else None
    submitted = submit_job(
        client,
        plan_job(client, request, request_id=request_id, key=key),
        receipts=Receipts(receipts, bucket_client(bucket)) if receipts else None,
        reconcile_since=since,
        before_create=before_create(settings),
    )
    if submitted.receipt is not None:
        receipt = submitted.receipt
        job = DerivedJob(submitted.video_id, receipt.model, receipt.duration, receipt.resolution, submitted.how)
    else:
        video, _ = client.retrieve(submitted.video_id)
        job = DerivedJob(submitted.video_id, str(video.model), str(video.seconds), str(video.size), submitted.how)
    logger = get_run_logger()
    if submitted.reused:
        logger.info("following %s, paid for by an earlier run of this %s", job.video_id, request.operation)
        return job
    logger.info("%s: %s (%s, %s s, %s)", request.describe(), job.video_id, job.model, job.seconds, job.size)
    emit_video_event(
        "created",
        job.video_id,
        operation=request.operation,
        source=request.video_id or (request.path.name if request.path else None),
        model=job.model,
        seconds=job.seconds,
        size=job.size,
    )
    return job
