"""Where a flow delivers, resolved once per run: a path, an s3:// URI, or a key in an S3Bucket block."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect_aws import S3Bucket

from sora_tasks.blocks import VideosApi, bucket_client, key_in_bucket, load_bucket
from sora_tasks.core.storage.destinations import check_bucket, resolve_destination, validate_output


@dataclass(frozen=True)
class Delivery:
    """``output`` is a full template (path or ``s3://bucket/key``); ``bucket`` lends its credentials."""

    output: str
    bucket: S3Bucket | None = None

    @property
    def bucket_block_name(self) -> str | None:
        """The saved block's name, for records another run reads (None for an unsaved block)."""
        return saved_name(self.bucket)

    def s3_client(self) -> Any:
        return bucket_client(self.bucket)


def resolve_delivery(output: str, destination: S3Bucket | str | None) -> Delivery:
    """Load the block once, place ``output`` in its bucket, and check what is free to check."""
    bucket = load_bucket(destination)
    full = key_in_bucket(bucket, output) if bucket is not None else output
    validate_output(full)
    if full.startswith("s3://"):
        check_bucket(resolve_destination(full, video_id="v", model="m").bucket or "", bucket_client(bucket))
    return Delivery(full, bucket)


def saved_name(block: VideosApi | S3Bucket | str | None) -> str | None:
    """A block's saved name, or the name it was given by; None for an unsaved object."""
    if block is None or isinstance(block, str):
        return block
    return getattr(block, "_block_document_name", None)
