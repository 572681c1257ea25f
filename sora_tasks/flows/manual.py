"""Manual mode: submit now, look at the status any time, collect when done.

Each step is its own flow run, so nothing sits waiting while a video renders.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect_aws import S3Bucket

from sora_tasks.blocks import VideosApi, load_api
from sora_tasks.core.api.client import status_dict
from sora_tasks.core.api.request import VideoRequest
from sora_tasks.core.api.settings import ApiSettings
from sora_tasks.core.errors import InvalidRequestError
from sora_tasks.core.jobs.pipeline import ensure_collectable
from sora_tasks.core.spec import VideoSpec, as_spec, build_request
from sora_tasks.core.storage.ledger import Ledger
from sora_tasks.core.storage.receipts import default_location as default_receipts
from sora_tasks.tasks import create_video, preprocess_image

from .delivery import Delivery, resolve_delivery
from .generate import DEFAULT_OUTPUT, deliver
from .hooks import pending_record
from .results import SubmittedVideo, VideoResult


@flow(name="submit-video")
def submit_video(
    video: VideoSpec | str,
    output: str | None = None,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    ledger: str | None = None,
    quality: str | None = None,
) -> SubmittedVideo:
    """Create the job and return its id at once (the seed's ``wait=False``).

    With ``ledger`` (a folder or ``s3://bucket/prefix``) the job is recorded there and
    the ``collect-pending`` flow delivers it to ``output`` once done: the async mode,
    in which no flow run waits while the video renders. ``quality`` (None: the block's)
    is recorded with it: the sweep checks the video so (``retry=N`` rejects like ``fail``
    there: a sweep never pays).
    """
    spec = as_spec(video)
    settings = load_api(api).with_quality(quality)
    request = build_request(spec, settings)
    if ledger is not None and output is None:
        raise InvalidRequestError("output is required with ledger: collect-pending needs to know where to deliver")
    delivery = resolve_delivery(output, destination) if output is not None else None
    book = Ledger(ledger) if ledger is not None else None
    settings.client()
    prepared = preprocess_image(spec.image, request.size, spec.fit) if spec.image else None
    receipts = default_receipts(delivery.output if delivery else None)
    video_id = create_video(
        request, settings, prepared, spec.request_id, receipts, delivery.bucket if delivery else None
    )
    if book is not None and delivery is not None:
        book.add(pending_record(video_id, request, delivery, settings, api))
        get_run_logger().info("submitted %s; recorded in %s for collect-pending", video_id, book.location)
    else:
        get_run_logger().info("submitted %s; collect it with `sora-video collect %s --output ...`", video_id, video_id)
    return SubmittedVideo(
        video_id=video_id,
        status="queued",
        model=request.model,
        duration=int(request.seconds),
        resolution=request.size,
        output=delivery.output if delivery else None,
    )


@flow(name="video-status")
def video_status(video_id: str, api: VideosApi | str | None = None) -> dict[str, Any]:
    """One status look-up; never waits."""
    video, _ = load_api(api).client().retrieve(video_id)
    return status_dict(video)


def collect(video_id: str, delivery: Delivery, settings: ApiSettings, previews: bool = True) -> VideoResult:
    """Deliver a finished video; raises clearly when it is not finished, failed or expired."""
    video, _ = settings.client().retrieve(video_id)
    ensure_collectable(video)
    request = VideoRequest(
        prompt=video.prompt or "", model=str(video.model), seconds=str(video.seconds), size=str(video.size)
    )
    return deliver(video_id, request, settings, delivery, video.model_dump(mode="json"), {}, previews=previews)


@flow(name="collect-video")
def collect_video(
    video_id: str,
    output: str = DEFAULT_OUTPUT,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    ledger: str | None = None,
    previews: bool = True,
    quality: str | None = None,
) -> VideoResult:
    """Deliver a finished video; fails clearly when it is not finished, failed, expired, or
    fails the quality check (``quality``, None: the block's; kept beside ``output`` then).

    Its record in ``ledger`` (if it has one there) is removed, so a sweep never delivers it
    again. ``previews``: the thumbnail and spritesheet go beside it, as with ``generate_video``.
    """
    settings = load_api(api).with_quality(quality)
    delivery = resolve_delivery(output, destination)
    settings.client()
    result = collect(video_id, delivery, settings, previews)
    if ledger is not None:
        Ledger(ledger).remove(video_id)
    return result
