"""Everything that can be checked for free, checked before any server starts or anything is paid.

Each check raises ``ValueError`` (an :class:`InvalidRequestError`) with one sentence that
says what was wrong and what is allowed; the CLI turns it into exit status 2.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from ..core.errors import ConfigurationError, InvalidRequestError
from ..core.request import VideoRequest

if TYPE_CHECKING:
    from ..core.images import PreparedImage
from ..core.spec import VideoSpec, build_request
from ..core.storage import check_bucket, resolve_destination, validate_output
from .backend import Target

# Ids are opaque (proxies encode routes in them) but never hold spaces, slashes or query characters.
_VIDEO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=+\-]{2,511}$")


def check_video_id(video_id: str) -> str:
    if not _VIDEO_ID.match(video_id):
        raise InvalidRequestError(
            f"video id {video_id!r} is not valid: ids look like video_68d7512d07848190 (letters, digits, _ - . : = +)"
        )
    return video_id


def check_output(output: str, destination_block: str | None = None) -> str:
    """The full destination (a key in the block's bucket, if one is named); for S3, the bucket
    must exist and the credentials reach it."""
    bucket_block = None
    if destination_block:
        from ..blocks import key_in_bucket, load_bucket

        bucket_block = load_bucket(destination_block)
        assert bucket_block is not None
        output = key_in_bucket(bucket_block, output)
    validate_output(output)
    if not output.startswith("s3://"):
        return output
    from botocore.exceptions import BotoCoreError

    bucket = resolve_destination(output, video_id="video_check", model="sora-2").bucket or ""
    try:
        check_bucket(bucket, bucket_block.credentials.get_s3_client() if bucket_block is not None else None)
    except BotoCoreError as error:
        raise ConfigurationError(f"cannot reach S3 to check bucket {bucket!r}: {error}") from error
    return output


def spec_of(args: argparse.Namespace) -> VideoSpec:
    return VideoSpec(
        prompt=args.prompt,
        image=args.image,
        model=args.model,
        duration=args.duration,
        resolution=args.resolution,
        fit=args.fit,
        extra_fields=dict(args.extra),
        request_id=args.request_id,
    )


def check_generate(args: argparse.Namespace, target: Target) -> tuple[VideoSpec, VideoRequest, PreparedImage | None]:
    """The spec, its checked request (built as the flow builds it) and the fitted image."""
    spec = spec_of(args)
    request = build_request(spec, target.settings)
    if args.max_wait is not None and args.max_wait <= 0:
        raise InvalidRequestError(f"--max-wait must be a positive number of seconds, got {args.max_wait}")
    check_output(args.output, args.destination_block)
    image = None
    if args.image:
        from ..core.images import prepare_image  # Pillow, only when there is an image

        image = prepare_image(args.image, request.size, fit=args.fit)
    return spec, request, image
