"""Prefect blocks as destinations: a prefect-aws ``S3Bucket`` block by name.

The block supplies the bucket, its folder and the credentials, so a deployment
needs only the block's name in its parameters, never a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .core.errors import ConfigurationError, InvalidRequestError


@dataclass(frozen=True)
class BucketTarget:
    bucket: str
    folder: str
    client: Any

    def uri(self, key_template: str) -> str:
        if key_template.startswith("s3://") or "://" in key_template or key_template.startswith("/"):
            raise InvalidRequestError(
                f"with s3_bucket_block, output is a key inside the block's bucket, got {key_template!r}"
            )
        prefix = f"{self.folder.strip('/')}/" if self.folder.strip("/") else ""
        return f"s3://{self.bucket}/{prefix}{key_template}"


def load_bucket_block(name: str) -> BucketTarget:
    try:
        from prefect_aws import S3Bucket
    except ImportError as error:  # an optional extra
        raise ConfigurationError("s3_bucket_block needs prefect-aws: pip install 'prefect-sora[aws]'") from error
    try:
        block = S3Bucket.load(name)
    except ValueError as error:
        raise ConfigurationError(f"no S3Bucket block named {name!r}: {error}") from error
    return BucketTarget(block.bucket_name, block.bucket_folder or "", block.credentials.get_s3_client())
