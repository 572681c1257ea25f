"""Everything that can be checked for free, checked before any server starts or anything is paid.

Each check raises ``ValueError`` (an :class:`InvalidRequestError`) with one sentence that
says what was wrong and what is allowed; the CLI turns it into exit status 2.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..core.api.request import VideoRequest
from ..core.errors import ConfigurationError, InvalidRequestError

if TYPE_CHECKING:
    from ..core.jobs.derived import DerivedOperation
    from ..core.jobs.storyboard import Storyboard
    from ..core.media.images import PreparedImage
from ..core.spec import VideoSpec, build_request
from ..core.storage.destinations import check_bucket, resolve_destination, validate_output
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
    check_max_wait(args.max_wait)
    check_output(args.output, args.destination_block)
    image = None
    if args.image:
        from ..core.media.images import prepare_image

        image = prepare_image(args.image, request.size, fit=args.fit)
    return spec, request, image


def check_quality(quality: str | None) -> str | None:
    """``--quality`` in its one spelling (``retry:1`` -> ``retry=1``); None: the block's setting."""
    if quality is None:
        return None
    from ..core.media.quality import normalize_quality

    try:
        return normalize_quality(quality)
    except InvalidRequestError as error:
        raise InvalidRequestError(f"--{error}") from None


def check_max_wait(max_wait: float | None) -> None:
    if max_wait is not None and max_wait <= 0:
        raise InvalidRequestError(f"--max-wait must be a positive number of seconds, got {max_wait}")


def check_source(source: str, what: str = "source") -> Literal["id", "upload"]:
    """How a source will be sent (by id, or uploaded), checked for free: a local file must be an MP4,
    an S3 object must exist (read later, before anything is paid)."""
    from ..core.api.references import video_source
    from ..core.jobs.derived import is_s3_source

    if not is_s3_source(source):
        return "id" if video_source(source, field=what).video_id is not None else "upload"
    from botocore.exceptions import BotoCoreError

    from ..core.storage.destinations import stored_object

    destination = resolve_destination(source.strip(), video_id="video_check", model="sora-2")
    try:
        found = stored_object(destination)
    except BotoCoreError as error:
        raise ConfigurationError(f"cannot reach S3 to read {source}: {error}") from error
    if found is None:
        raise InvalidRequestError(f"{what}: no such S3 object: {source}")
    return "upload"


def check_derive(operation: DerivedOperation, args: argparse.Namespace, target: Target) -> None:
    """A remix, edit or extension's input, and whether the server serves it: before anything is paid."""
    from ..core.jobs.derived import check_derived, check_support

    check_derived(operation, args.prompt, getattr(args, "duration", None))
    source = args.video_id if operation == "remix" else args.source
    check_support(target.settings.profile, operation, check_source(source))
    check_max_wait(args.max_wait)
    check_output(args.output, args.destination_block)


def check_character(args: argparse.Namespace, target: Target) -> None:
    from ..core.api.references import check_id, check_name

    profile = target.settings.profile
    profile.require("characters")
    if args.action == "show":
        check_id(args.character_id, "character_id", "an id such as char_123")
        return
    check_name(args.name)
    profile.require("characters", source=check_source(args.video, "video"))


@dataclass(frozen=True)
class StoryboardInput:
    """A storyboard as the command line gives it: the file's fields, with the flags over them."""

    shots: list[str]
    duration: int | str | list[int | str] = 4
    image: str | None = None
    model: str | None = None
    resolution: str = "1280x720"


def read_storyboard(args: argparse.Namespace) -> StoryboardInput:
    """The storyboard file (one prompt a line, or JSON) with the command line's flags over it."""
    import sys

    name = args.file
    try:
        text = sys.stdin.read() if name == "-" else Path(name).expanduser().read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidRequestError(f"storyboard file {name}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise InvalidRequestError(f"storyboard file {name} is not UTF-8 text: {error}") from error
    fields = _storyboard_fields(text, name)
    if args.image:
        fields["image"] = args.image
    if args.model:
        fields["model"] = args.model
    if args.resolution:
        fields["resolution"] = args.resolution
    if args.duration:
        values = [value.strip() for value in str(args.duration).split(",")]
        fields["duration"] = values[0] if len(values) == 1 else values
    return StoryboardInput(**fields)


def _storyboard_fields(text: str, name: str) -> dict[str, Any]:
    stripped = text.strip()
    if not stripped.startswith(("[", "{")):
        lines = [line.strip() for line in text.splitlines()]
        return {"shots": [line for line in lines if line and not line.startswith("#")]}
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(f"storyboard file {name} is not valid JSON: {error}") from error
    fields: dict[str, Any] = {}
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"shots", "image", "model", "resolution", "duration"})
        if unknown:
            raise InvalidRequestError(
                f"storyboard file {name}: unknown field(s) {', '.join(unknown)}; "
                "allowed: shots, image, model, resolution, duration"
            )
        fields = {key: value for key, value in data.items() if key != "shots"}
        data = data.get("shots")
    if not isinstance(data, list):
        raise InvalidRequestError(f"storyboard file {name}: shots must be a list of prompts")
    shots: list[str] = []
    durations: list[int | str] = []
    for index, shot in enumerate(data, start=1):
        if isinstance(shot, dict):
            if not isinstance(shot.get("prompt"), str):
                raise InvalidRequestError(f"storyboard file {name}: shot {index} has no prompt")
            shots.append(shot["prompt"])
            durations.append(shot.get("duration", shot.get("seconds", fields.get("duration", 4))))
        elif isinstance(shot, str):
            shots.append(shot)
            durations.append(fields.get("duration", 4))
        else:
            raise InvalidRequestError(f"storyboard file {name}: shot {index} must be a prompt or an object with one")
    if any(isinstance(shot, dict) for shot in data):
        fields["duration"] = durations
    return {**fields, "shots": shots}


def check_storyboard(
    story: StoryboardInput, args: argparse.Namespace, target: Target
) -> tuple[Storyboard, PreparedImage | None]:
    """The checked storyboard and its fitted first image, before anything is paid."""
    from ..core.jobs.storyboard import Storyboard

    settings = target.settings
    board = Storyboard.build(
        settings.profile,
        story.shots,
        model=story.model or settings.model,
        resolution=story.resolution,
        duration=story.duration,
    )
    check_max_wait(args.max_wait)
    check_output(args.output, args.destination_block)
    image = None
    if story.image:
        from ..core.media.images import prepare_image

        image = prepare_image(story.image, board.first.size, fit=args.fit)
    return board, image
