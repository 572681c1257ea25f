"""Everything that can be checked for free, checked before any server starts or anything is paid.

Each check raises ``ValueError`` (an :class:`InvalidRequestError`) with one sentence that
says what was wrong and what is allowed; the CLI turns it into exit status 2.
"""

from __future__ import annotations

import argparse
import re

from ..core.client import resolve_base_url
from ..core.errors import ConfigurationError, InvalidRequestError
from ..core.images import PreparedImage, prepare_image
from ..core.providers import ProviderProfile, resolve_profile
from ..core.request import VideoRequest
from ..core.storage import check_bucket, resolve_destination, validate_output
from .backend import Target

# Ids are opaque (proxies encode routes in them) but never hold spaces, slashes or query characters.
_VIDEO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=+\-]{2,511}$")


def profile_for(target: Target) -> ProviderProfile:
    """The same profile the run will use: the emulator's is OpenAI's, whatever its local URL."""
    if target.emulator:
        return resolve_profile(target.provider, "https://api.openai.com/v1")
    return resolve_profile(target.provider, resolve_base_url(target.base_url))


def check_video_id(video_id: str) -> str:
    if not _VIDEO_ID.match(video_id):
        raise InvalidRequestError(
            f"video id {video_id!r} is not valid: ids look like video_68d7512d07848190 (letters, digits, _ - . : = +)"
        )
    return video_id


def check_output(output: str) -> None:
    """The template parses and, for S3, the bucket exists and the credentials reach it."""
    validate_output(output)
    if not output.startswith("s3://"):
        return
    from botocore.exceptions import BotoCoreError

    bucket = resolve_destination(output, video_id="video_check", model="sora-2").bucket or ""
    try:
        check_bucket(bucket)
    except BotoCoreError as error:
        raise ConfigurationError(f"cannot reach S3 to check bucket {bucket!r}: {error}") from error


def check_generate(args: argparse.Namespace, target: Target) -> tuple[VideoRequest, PreparedImage | None]:
    """The validated request and the fitted image, or a ValueError naming the bad field."""
    request = profile_for(target).build_request(
        args.prompt, model=args.model, duration=args.duration, resolution=args.resolution, extra=dict(args.extra)
    )
    if args.max_wait <= 0:
        raise InvalidRequestError(f"--max-wait must be a positive number of seconds, got {args.max_wait}")
    check_output(args.output)
    image = prepare_image(args.image, request.size, fit=args.fit) if args.image else None
    return request, image
