"""The CLI's commands on the engine-agnostic core: no Prefect import, no server to start.

Used when no Prefect API is configured. A call then costs what the work costs (measured
in docs/benchmarks.md); the guarantees are the core's: one create, reconciled when
ambiguous; a receipt per paid job so a rerun follows it; a paid video that could not be
delivered is recorded in the ledger for ``sora-video pending``.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import TYPE_CHECKING, Any

from ..core.api.client import status_dict
from ..core.api.request import VideoRequest
from ..core.api.settings import ApiSettings
from ..core.errors import StoryboardError, VideoJobError, VideoQualityError
from ..core.jobs import pipeline
from ..core.jobs.sweep import DEFAULT_WORKERS, SweepScope, sweep
from ..core.media.images import PreparedImage
from ..core.media.quality import QualityPolicy
from ..core.spec import VideoSpec
from ..core.storage.ledger import Ledger, PendingVideo
from ..core.storage.receipts import Receipts
from ..core.storage.receipts import default_location as default_receipts
from .backend import Target
from .display import Reporter

if TYPE_CHECKING:
    from ..core.jobs.derived import DerivedOperation
    from ..core.jobs.storyboard import Storyboard

logger = logging.getLogger("sora_tasks.cli")


def generate(
    args: argparse.Namespace,
    target: Target,
    spec: VideoSpec,
    request: VideoRequest,
    image: PreparedImage | None,
    reporter: Reporter,
) -> str:
    settings = target.settings.with_quality(args.quality)
    client = settings.new_client()
    try:
        delivered = pipeline.produce(
            client,
            request,
            args.output,
            image=image,
            request_id=spec.request_id,
            receipts=Receipts(default_receipts(args.output)),
            max_wait=settings.max_wait,
            poll_interval=settings.poll_interval,
            on_progress=reporter.update,
            on_submitted=lambda submitted: reporter.submitted(submitted.video_id, reused=submitted.reused),
            previews=args.previews,
            quality=settings.quality_policy,
            on_rejected=reporter.rejected,
        )
    except Exception as error:
        keep_for_collection(error, request, args.output, settings, args.ledger)
        raise
    finally:
        client.close()
    reporter.delivered(delivered)
    return delivered.uri


def _record(
    video_id: str, request: VideoRequest | None, output: str, settings: ApiSettings, reason: str
) -> PendingVideo:
    # The quality setting goes with it: `pending` checks the video as this call would have.
    if request is None:  # a derived job: its model, length and size follow its source
        return PendingVideo(
            video_id,
            output,
            base_url=settings.base_url,
            provider=settings.provider,
            reason=reason,
            quality=settings.quality,
        )
    return PendingVideo.of(
        video_id,
        request,
        output,
        base_url=settings.base_url,
        provider=settings.provider,
        reason=reason,
        quality=settings.quality,
    )


def keep_for_collection(
    error: BaseException, request: VideoRequest | None, output: str, settings: ApiSettings, ledger: str | None
) -> None:
    """A video paid for but not delivered (deadline passed, upload failed) goes to the ledger."""
    video_id = getattr(error, "video_id", None)
    finished = (VideoJobError, VideoQualityError)
    if isinstance(error, StoryboardError):
        # Only the final shot's own job is the storyboard's video; an earlier shot's is not to be delivered.
        final = error.shot == error.shots and not isinstance(error.__cause__, finished)
        video_id = error.shot_video_id if final else None
    if not video_id or isinstance(error, finished):
        # Nothing was paid for, the job itself failed, or its video failed the quality check
        # (kept beside the output, marked in its receipt): nothing to deliver later.
        return
    book = Ledger(ledger)
    book.add(_record(video_id, request, output, settings, type(error).__name__))
    logger.warning("video %s recorded in %s: `sora-video pending` delivers it once done", video_id, book.location)


def submit(
    args: argparse.Namespace, target: Target, spec: VideoSpec, request: VideoRequest, image: PreparedImage | None
) -> str:
    book = Ledger(args.ledger)
    settings = target.settings.with_quality(args.quality)
    client = settings.new_client()
    try:
        receipts = Receipts(default_receipts(args.output))
        submitted = pipeline.submit(client, request, image, request_id=spec.request_id, receipts=receipts)
    finally:
        client.close()
    book.add(_record(submitted.video_id, request, args.output, settings, "submitted"))
    return submitted.video_id


def status(args: argparse.Namespace, target: Target) -> str:
    client = target.settings.new_client()
    try:
        video, _ = client.retrieve(args.video_id)
    finally:
        client.close()
    return json.dumps(status_dict(video), indent=2)


def collect(args: argparse.Namespace, target: Target, reporter: Reporter) -> str:
    settings = target.settings.with_quality(args.quality)
    client = settings.new_client()
    try:
        delivered = pipeline.collect(
            client, args.video_id, args.output, previews=args.previews, quality=settings.quality_policy
        )
    finally:
        client.close()
    Ledger(args.ledger).remove(args.video_id)  # delivered: `pending` must not deliver it again
    reporter.delivered(delivered)
    return delivered.uri


def pending(
    book: Ledger,
    target: Target,
    workers: int = DEFAULT_WORKERS,
    *,
    previews: bool = True,
    outputs: str | None = None,
) -> list[dict[str, Any]]:
    """Sweep the ledger with the core, ``workers`` videos at once, through the target's server only.

    A record made on another server is skipped (see :class:`~..core.jobs.sweep.SweepScope`).
    """
    settings = target.settings
    scope = SweepScope(settings.resolved_base_url, book.location, outputs)

    def deliver(record: PendingVideo) -> str:
        scope.admit(record)
        # Checked as it was submitted to be (fail when it did not say); a sweep never pays, so
        # under retry=N a failing video is rejected, kept beside its output, and its record goes.
        quality = QualityPolicy.of(record.quality or "fail")
        # This worker thread's client for the sweep's server, kept for its later records.
        client = settings.client()
        return pipeline.collect(client, record.video_id, record.output, previews=previews, quality=quality).uri

    return sweep(book, deliver, workers=workers)


def derive(args: argparse.Namespace, target: Target, operation: DerivedOperation, reporter: Reporter) -> str:
    """A remix, edit or extension delivered to ``--output``, with the receipts' guarantees."""
    from ..core.jobs.derived import DerivedRequest, fetch_source

    settings = target.settings.with_quality(args.quality)
    fetched = fetch_source(args.video_id if operation == "remix" else args.source)
    client = settings.new_client()
    try:
        request = DerivedRequest.build(operation, args.prompt, fetched.source, duration=getattr(args, "duration", None))
        delivered = pipeline.produce(
            client,
            request,
            args.output,
            request_id=args.request_id,
            receipts=Receipts(default_receipts(args.output)),
            max_wait=settings.max_wait,
            poll_interval=settings.poll_interval,
            on_progress=reporter.update,
            on_submitted=lambda submitted: reporter.submitted(submitted.video_id, reused=submitted.reused),
            previews=args.previews,
            quality=settings.quality_policy,
            on_rejected=reporter.rejected,
        )
    except Exception as error:
        keep_for_collection(error, None, args.output, settings, args.ledger)
        raise
    finally:
        client.close()
        fetched.cleanup()
    reporter.delivered(delivered)
    return delivered.uri


def storyboard(
    args: argparse.Namespace, target: Target, board: Storyboard, image: PreparedImage | None, reporter: Reporter
) -> str:
    """The storyboard's one video at ``--output``; a rerun resumes from the last finished shot."""
    from ..core.jobs.storyboard import produce_storyboard

    settings = target.settings.with_quality(args.quality)
    client = settings.new_client()
    plan = board.plan(client.base_url, image=image, request_id=args.request_id)
    count = len(plan.shots)

    def submitted(shot: Any, job: pipeline.Submitted) -> None:
        reporter.say(f"shot {shot.index} of {count} ({shot.seconds} s): {job.video_id} ({job.how})")

    try:
        made = produce_storyboard(
            client,
            plan,
            args.output,
            receipts=Receipts(default_receipts(args.output)),
            max_wait=settings.max_wait,
            poll_interval=settings.poll_interval,
            on_progress=reporter.update,
            on_submitted=submitted,
            previews=args.previews,
            quality=settings.quality_policy,
        )
    except Exception as error:
        keep_for_collection(error, None, args.output, settings, args.ledger)
        raise
    finally:
        client.close()
    reporter.delivered(made.delivered)
    if made.how == "already delivered":
        reporter.say("already delivered by an earlier run: nothing was paid for")
    return made.delivered.uri


def character(args: argparse.Namespace, target: Target) -> str:
    """``character create``: a character from a video (JSON); ``character show``: one by id."""
    from ..core.jobs.derived import fetch_source

    client = target.settings.new_client()
    try:
        if args.action == "show":
            found: Any = client.get_character(args.character_id)
        else:
            fetched = fetch_source(args.video)
            try:
                found = client.create_character(name=args.name, video=fetched.source)
            finally:
                fetched.cleanup()
    finally:
        client.close()
    return json.dumps(found.model_dump(mode="json", exclude_none=True), indent=2)


def takes(
    args: argparse.Namespace, target: Target, spec: VideoSpec, request: VideoRequest, image: PreparedImage | None
) -> tuple[str | None, str]:
    """``takes``: the core's review, asked on this terminal; (the delivered URI or None, what happened)."""
    from ..core.errors import ReviewTimeoutError
    from ..core.jobs.review import TakeJobs, review
    from .takes import say, terminal_ask

    settings = target.settings
    client = settings.new_client()
    try:
        jobs = TakeJobs(
            client,
            args.output,
            Receipts(default_receipts(args.output)),
            previews=args.previews,
            max_wait=settings.max_wait,
            poll_interval=settings.poll_interval,
            on_submitted=lambda submitted: say(f"{submitted.video_id}: {submitted.how}"),
        )
        outcome = review(
            jobs,
            request,
            image,
            terminal_ask(timeout=args.timeout, open_them=args.open),
            count=args.takes,
            request_id=spec.request_id,
            max_rounds=args.max_rounds,
            on_timeout=args.on_timeout,
        )
    finally:
        client.close()
    deleted = f"{len(outcome.deleted)} other takes deleted at the provider"
    earlier = " (decided by an earlier run: nothing asked or paid)" if outcome.how == "already decided" else ""
    if outcome.delivered is not None and outcome.kept is not None:
        return (
            outcome.delivered.uri,
            f"take {outcome.kept.number} delivered to {outcome.delivered.uri}; {deleted}{earlier}",
        )
    if outcome.decision.kind == "timeout":
        raise ReviewTimeoutError(f"no decision within {args.timeout:.0f} s: nothing delivered; {deleted}{earlier}")
    return None, f"every take rejected: nothing delivered; {deleted}{earlier}"
