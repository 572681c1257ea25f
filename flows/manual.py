"""Manual mode: submit now, look at the status any time, collect when done.

Each step is its own flow run, so nothing sits waiting while a video renders.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from sora_tasks.connection import ApiSettings
from sora_tasks.core.client import status_dict
from sora_tasks.core.errors import InvalidRequestError
from sora_tasks.core.images import Fit
from sora_tasks.core.ledger import Ledger, PendingVideo
from sora_tasks.core.pipeline import ensure_collectable
from sora_tasks.core.request import VideoRequest
from sora_tasks.tasks import create_video, preprocess_image

from .generate import DEFAULT_OUTPUT, build_request, deliver, preflight
from .results import SubmittedVideo, VideoResult


@flow(name="submit-video")
def submit_video(
    prompt: str,
    image: str | None = None,
    model: str = "sora-2",
    duration: int = 4,
    resolution: str = "1280x720",
    output: str | None = None,
    fit: Fit = "cover",
    base_url: str | None = None,
    api_key_secret: str | None = None,
    request_id: str | None = None,
    ledger: str | None = None,
    provider: str | None = None,
    extra_fields: dict[str, Any] | None = None,
) -> SubmittedVideo:
    """Create the job and return its id at once (the seed's ``wait=False``).

    With ``ledger`` (a folder or ``s3://bucket/prefix``) the job is recorded there and
    the ``collect-pending`` flow delivers it to ``output`` once done: the async mode,
    in which no flow run waits while the video renders.
    """
    settings = ApiSettings(base_url=base_url, api_key_secret=api_key_secret, provider=provider)
    request = build_request(prompt, model, duration, resolution, settings, extra_fields)
    if ledger is not None and output is None:
        raise InvalidRequestError("output is required with ledger: collect-pending needs to know where to deliver")
    preflight(settings, output)
    prepared = preprocess_image(image, request.size, fit) if image else None
    video_id = create_video(request, settings, prepared, request_id)
    if ledger is not None and output is not None:
        Ledger(ledger).add(
            PendingVideo(
                video_id=video_id,
                output=output,
                model=request.model,
                seconds=request.seconds,
                size=request.size,
                base_url=base_url,
                api_key_secret=api_key_secret,
                provider=provider,
            )
        )
        get_run_logger().info("submitted %s; recorded in %s for collect-pending", video_id, ledger)
    else:
        get_run_logger().info("submitted %s; collect it with `sora-video collect %s --output ...`", video_id, video_id)
    return SubmittedVideo(
        video_id=video_id,
        status="queued",
        model=request.model,
        seconds=request.seconds,
        size=request.size,
        output=output,
    )


@flow(name="video-status")
def video_status(
    video_id: str, base_url: str | None = None, api_key_secret: str | None = None, provider: str | None = None
) -> dict[str, Any]:
    """One status look-up; never waits."""
    client = ApiSettings(base_url=base_url, api_key_secret=api_key_secret, provider=provider).client()
    video, _ = client.retrieve(video_id)
    return status_dict(video)


def collect(video_id: str, output: str, settings: ApiSettings, s3_bucket_block: str | None = None) -> VideoResult:
    """Deliver a finished video; raises clearly when it is not finished, failed or expired."""
    client = settings.client()
    video, _ = client.retrieve(video_id)
    ensure_collectable(video)
    request = VideoRequest(
        prompt=video.prompt or "", model=str(video.model), seconds=str(video.seconds), size=str(video.size)
    )
    return deliver(video_id, request, settings, output, video.model_dump(mode="json"), {}, s3_bucket_block)


@flow(name="collect-video")
def collect_video(
    video_id: str,
    output: str = DEFAULT_OUTPUT,
    base_url: str | None = None,
    api_key_secret: str | None = None,
    s3_bucket_block: str | None = None,
    provider: str | None = None,
) -> VideoResult:
    """Deliver a finished video; fails clearly when it is not finished, failed or expired."""
    settings = ApiSettings(base_url=base_url, api_key_secret=api_key_secret, provider=provider)
    preflight(settings, output, s3_bucket_block)
    return collect(video_id, output, settings, s3_bucket_block)
