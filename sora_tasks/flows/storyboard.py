"""A storyboard: a list of shot prompts (and optionally a first image) becomes one continuous video.

Shot 1 is a create; every later shot extends the one before it by id (4, 8, 12, 16 or
20 s). Every shot's job is recorded in a receipt the moment it is answered, and the
receipts are chained (shot k's fingerprint holds shot k-1's), so a failed run resumes
on rerun from the last shot an earlier run paid for, without paying for it again, and a
delivered storyboard is found with no API call. Only the final video is delivered.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect_aws import S3Bucket

from sora_tasks.blocks import VideosApi, load_api, presigning_client
from sora_tasks.core.api.settings import ApiSettings
from sora_tasks.core.errors import VideoNotReadyError, VideoQualityError
from sora_tasks.core.jobs.derived import request_of
from sora_tasks.core.jobs.gate import record_rejection
from sora_tasks.core.jobs.pipeline import find_delivered, record_delivery
from sora_tasks.core.jobs.storyboard import (
    Plan,
    Resume,
    Shot,
    ShotOutcome,
    Storyboard,
    overall_how,
    recorded_shots,
    resume_point,
    shot_failure,
)
from sora_tasks.core.media.images import Fit
from sora_tasks.core.media.quality import Expectation
from sora_tasks.core.storage.destinations import MAX_PRESIGN_SECONDS, presign
from sora_tasks.core.storage.receipts import Receipts
from sora_tasks.core.storage.receipts import default_location as default_receipts
from sora_tasks.core.summary import storyboard_markdown
from sora_tasks.core.text import markdown_link, markdown_text, shorten
from sora_tasks.derive_tasks import derive_video
from sora_tasks.tasks import create_video, preprocess_image, rendering_slot, wait_for_video

from .delivery import Delivery, resolve_delivery
from .generate import DEFAULT_OUTPUT, already_delivered, deliver
from .hooks import keep_for_collection
from .results import ShotResult, StoryboardResult


@flow(name="storyboard", log_prints=True)
def storyboard(
    shots: list[str],
    output: str = DEFAULT_OUTPUT,
    image: str | None = None,
    model: str | None = None,
    resolution: str = "1280x720",
    duration: int | str | list[int | str] = 4,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    fit: Fit = "cover",
    previews: bool = True,
    ledger: str | None = None,
    request_id: str | None = None,
    quality: str | None = None,
) -> StoryboardResult:
    """``shots`` (one prompt a shot) -> one video at ``output``: shot 1 made, then extended shot by shot.

    ``duration``: every shot's length, or a list with one a shot (the first 4, 8 or 12 s
    on OpenAI's API; each extension 4, 8, 12, 16 or 20 s). ``image``: a reference image
    for the first shot (path or ``s3://``, fitted to ``resolution`` per ``fit``).
    ``model`` (default: the API block's) and ``resolution`` are the first shot's, which
    the extensions keep. ``output``, ``api``, ``destination``, ``previews``, ``ledger``,
    ``request_id`` as in ``generate_video``. The result lists each shot's video id; its
    ``duration`` is the sum of the shots. ``quality`` as in ``generate_video``, applied to
    the final video; ``retry=N`` rejects like ``fail`` here (re-making a storyboard's last
    shot is left to a rerun with another ``request_id``).
    """
    settings = load_api(api).with_quality(quality)
    board = Storyboard.build(
        settings.profile, shots, model=model or settings.model, resolution=resolution, duration=duration
    )
    delivery = resolve_delivery(output, destination)
    client = settings.client()
    receipts_at = default_receipts(delivery.output)
    receipts = Receipts(receipts_at, delivery.s3_client())
    prepared = preprocess_image(image, board.first.size, fit) if image else None
    plan = board.plan(client.base_url, image=prepared, request_id=request_id)
    logger = get_run_logger()
    done = find_delivered(receipts, plan.final.key, delivery.output, model=plan.model, s3=delivery.s3_client())
    if done is not None:
        logger.info("storyboard already delivered at %s (video %s): nothing to pay for", done.uri, done.video_id)
        outcomes = recorded_shots(plan, receipts, "already delivered")
        result = StoryboardResult(**already_delivered(done).model_dump(), shots=_shots(outcomes))
        report(result, delivery)
        return result
    return _run(plan, settings, delivery, receipts, receipts_at, api, previews, ledger)


def _run(
    plan: Plan,
    settings: ApiSettings,
    delivery: Delivery,
    receipts: Receipts,
    receipts_at: str,
    api: VideosApi | str | None,
    previews: bool,
    ledger: str | None,
) -> StoryboardResult:
    logger = get_run_logger()
    client = settings.client()
    resume = resume_point(client, plan, receipts)
    completed: list[ShotOutcome] = []
    remaining = plan.shots
    if resume.shot is not None and resume.receipt is not None:
        logger.info(
            "resuming at shot %d of %d (%s, paid for by an earlier run)",
            resume.shot.index,
            len(plan.shots),
            resume.receipt.video_id,
        )
        completed = [shot for shot in recorded_shots(plan, receipts, "resumed") if shot.index < resume.shot.index]
        remaining = plan.shots[resume.shot.index - 1 :]
    timings: dict[str, float] = {"create": 0.0, "wait": 0.0}
    rendered: dict[str, Any] = {}
    for shot in remaining:
        video_id: str | None = None
        try:
            with rendering_slot(settings):
                started = time.monotonic()
                video_id, how = _shot_job(plan, shot, completed, resume, settings, receipts, receipts_at, delivery)
                timings["create"] += time.monotonic() - started
                logger.info("shot %d of %d: %s (%s)", shot.index, len(plan.shots), video_id, how)
                started = time.monotonic()
                waiter = wait_for_video.with_options(timeout_seconds=settings.max_wait + 120)
                try:
                    rendered = waiter(video_id, settings)
                except VideoNotReadyError as error:
                    if error.status != "not_found" or how == "created":
                        raise
                    logger.warning("shot %d: video %s is gone from the server; making it again", shot.index, video_id)
                    receipts.forget(shot.key)
                    video_id, how = _shot_job(
                        plan, shot, completed, Resume(), settings, receipts, receipts_at, delivery
                    )
                    how = "recreated"
                    rendered = waiter(video_id, settings)
                timings["wait"] += time.monotonic() - started
        except Exception as error:
            if shot is plan.final and video_id is not None:
                # The final video was paid for: collect-pending can deliver it once it is done.
                first = plan.storyboard.first
                fields = {"model": first.model, "seconds": plan.storyboard.total_seconds, "size": first.size}
                request = request_of(fields, plan.prompt)
                keep_for_collection(error, video_id, request, delivery, settings, api, ledger)
            raise shot_failure(error, plan, shot, video_id, completed) from error
        completed.append(ShotOutcome(shot.index, shot.prompt, int(shot.seconds), video_id, how))
    final = completed[-1]
    made = request_of(rendered, plan.prompt)
    try:
        delivered = deliver(
            final.video_id,
            made,
            settings,
            delivery,
            rendered,
            timings,
            previews=previews,
            fingerprint=plan.final.key,
            artifacts=False,
            expected=Expectation.of(plan.storyboard.first.size, plan.storyboard.total_seconds),
        )
    except Exception as error:
        if isinstance(error, VideoQualityError):
            record_rejection(receipts, plan.final.key, error)
        keep_for_collection(error, final.video_id, made, delivery, settings, api, ledger)
        raise shot_failure(error, plan, plan.final, final.video_id, completed[:-1]) from error
    result = StoryboardResult(**{**delivered.model_dump(), "how": overall_how(completed)}, shots=_shots(completed))
    record_delivery(receipts, plan.final.key, result)
    report(result, delivery)
    return result


def _shot_job(
    plan: Plan,
    shot: Shot,
    completed: list[ShotOutcome],
    resume: Resume,
    settings: ApiSettings,
    receipts: Receipts,
    receipts_at: str,
    delivery: Delivery,
) -> tuple[str, str]:
    """(video id, how) of ``shot``'s job: the earlier run's (resume point), or one made now by its task."""
    if resume.shot is shot and resume.receipt is not None:
        return resume.receipt.video_id, "resumed"
    if shot.index == 1:
        earlier = receipts.find(shot.key)
        video_id = create_video(
            plan.storyboard.first, settings, plan.image, plan.request_id, receipts_at, delivery.bucket
        )
        if earlier is None:
            return video_id, "created"
        return video_id, "resumed" if earlier.video_id == video_id else "recreated"
    request = plan.extension(shot, completed[-1].video_id)
    job = derive_video(request, settings, plan.request_id, receipts_at, delivery.bucket, key=shot.key)
    return job.video_id, job.how


def _shots(outcomes: list[ShotOutcome]) -> list[ShotResult]:
    return [
        ShotResult(index=shot.index, prompt=shot.prompt, duration=shot.seconds, video_id=shot.video_id, how=shot.how)
        for shot in outcomes
    ]


def report(result: StoryboardResult, delivery: Delivery) -> None:
    """The storyboard's summary and a link to its video (presigned for S3); escaped, as every artifact is."""
    fields = result.model_dump(exclude={"timings", "shots"})
    description = markdown_text(f"Storyboard video {result.video_id}")
    create_markdown_artifact(
        markdown=storyboard_markdown(fields, [shot.model_dump() for shot in result.shots]), description=description
    )
    try:
        url: str | None = presign(result.uri, MAX_PRESIGN_SECONDS, presigning_client(delivery.bucket))
    except Exception as error:  # the video is delivered; a link that cannot be signed is shown as text
        get_run_logger().warning("no link to %s in the artifact: %s", shorten(result.uri), error)
        url = None
    create_markdown_artifact(markdown=markdown_link(result.uri, url), description=description)
