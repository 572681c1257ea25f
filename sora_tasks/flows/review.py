"""Takes and review: several takes of one prompt, a person picks one in the Prefect UI (or asks for a
remix of one), and only the pick is delivered, exactly as ``generate_video`` delivers.

The run makes ``takes`` paid jobs (each receipted under its own request id), stores their
previews where the person can see them, and waits: *paused* when run ad hoc (the process
waits), *suspended* when run from a deployment (nothing is held; Prefect executes the run
again from the top once resumed, and the receipts make everything before the wait free).
The paused run carries a form (``take``, ``remix_of`` + ``note``, ``reject``) whose
description shows every take; ``resume_flow_run(id, run_input={"take": 2})`` answers it
from code. ``sora.review.waiting`` (with the run's UI URL) and ``sora.review.decided``
are emitted for automations; the keyed artifact ``<key>-takes`` keeps each round's table.

The final decision is recorded beside the receipts before anything is delivered or
deleted, so a rerun (after a crash, or of a finished review) carries it out again with
no take made or followed and nothing asked.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.states import Completed
from prefect_aws import S3Bucket

from sora_tasks.blocks import VideosApi, load_api, presigning_client
from sora_tasks.core.errors import ReviewTimeoutError
from sora_tasks.core.jobs import review
from sora_tasks.core.jobs.pipeline import find_delivered, job_key, record_delivery
from sora_tasks.core.jobs.review import Decision, ReviewRecord, Reviews, Take, browser_url, take_request_id
from sora_tasks.core.spec import VideoSpec, as_spec, build_request
from sora_tasks.core.storage.destinations import MAX_PRESIGN_SECONDS, check_presign_seconds
from sora_tasks.core.storage.receipts import Receipts
from sora_tasks.core.storage.receipts import default_location as default_receipts
from sora_tasks.core.summary import takes_markdown
from sora_tasks.core.text import markdown_code, markdown_text
from sora_tasks.review_tasks import answered_before as answered
from sora_tasks.review_tasks import (
    cancel_deadline,
    decision_form,
    delete_takes,
    emit_review_event,
    expire,
    flow_run_id,
    from_a_deployment,
    make_take,
    remix_take,
    run_url,
    wait_for_decision,
)
from sora_tasks.tasks import preprocess_image

from .delivery import Delivery, resolve_delivery
from .generate import DEFAULT_OUTPUT, Summary, already_delivered, deliver, run_artifact_key
from .hooks import keep_for_collection
from .results import ReviewResult, TakeResult, VideoResult


class _Review:
    """One review's fixed pieces, resolved once per run (and once per execution of a resumed run)."""

    def __init__(
        self,
        spec: VideoSpec,
        api: VideosApi | str | None,
        delivery: Delivery,
        summary: Summary,
        previews: bool,
        ledger: str | None,
        timeout: int,
        on_timeout: review.OnTimeout,
    ) -> None:
        self.spec, self.api, self.delivery, self.summary = spec, api, delivery, summary
        self.previews, self.ledger, self.timeout, self.on_timeout = previews, ledger, timeout, on_timeout
        self.settings = load_api(api)
        self.request = build_request(spec, self.settings)
        self.receipts_at = default_receipts(delivery.output)
        self.receipts = Receipts(self.receipts_at, delivery.s3_client())
        self.reviews = Reviews(self.receipts, delivery.s3_client())
        self.presigner = presigning_client(delivery.bucket)

    def markdown(self, takes: list[Take], title: str, intro: list[str]) -> str:
        seconds = self.summary.url_seconds
        images = {take.number: browser_url(take.thumbnail_uri, s3=self.presigner, seconds=seconds) for take in takes}
        frames = {
            take.number: browser_url(take.spritesheet_uri, s3=self.presigner, seconds=seconds)
            for take in takes
            if take.spritesheet_uri and take.spritesheet_uri.startswith("s3://")  # a data: link opens nowhere
        }
        return takes_markdown(
            [take.to_dict() for take in takes], title=title, images=images, frames=frames, intro=intro
        )

    def history(self, markdown: str, description: str) -> None:
        """The keyed takes table: each round and the decision, under ``<summary key>-takes``."""
        try:
            create_markdown_artifact(key=f"{self.summary.key}-takes", markdown=markdown, description=description)
        except Exception as error:  # a table that cannot be written never fails the review
            get_run_logger().warning("takes artifact not written: %s", error)


@flow(name="review-video", log_prints=True)
def review_video(
    video: VideoSpec | str,
    takes: int = 3,
    output: str = DEFAULT_OUTPUT,
    api: VideosApi | str | None = None,
    destination: S3Bucket | str | None = None,
    timeout: int = 3600,
    on_timeout: Literal["reject", "first"] = "reject",
    max_rounds: int = 3,
    previews: bool = True,
    ledger: str | None = None,
    artifact_key: str | None = None,
    preview_url_seconds: int = MAX_PRESIGN_SECONDS,
) -> ReviewResult | State:
    """``takes`` takes of ``video``; a person keeps one (delivered to ``output`` like ``generate_video``),
    asks for a remix of one (at most ``max_rounds`` times), or rejects them all.

    ``video``, ``output``, ``api``, ``destination``, ``previews``, ``ledger``, ``artifact_key``
    and ``preview_url_seconds`` as in ``generate_video``. ``timeout``: seconds to wait for each
    decision; then nothing is delivered (the run fails with ``ReviewTimeoutError``), or with
    ``on_timeout="first"`` take 1 is. Every take not delivered is deleted at the provider. A
    rejection ends the run Completed, named ``Rejected``, with nothing delivered.
    """
    spec = as_spec(video)
    review.check_review(takes, timeout, on_timeout, max_rounds)
    summary = Summary(run_artifact_key(artifact_key), check_presign_seconds(preview_url_seconds))
    it = _Review(spec, api, resolve_delivery(output, destination), summary, previews, ledger, timeout, on_timeout)
    logger = get_run_logger()
    # Raises on a missing key or a malformed URL before anything is paid.
    client = it.settings.client()
    if not it.settings.profile.supports_delete:
        logger.warning("provider %s cannot delete videos: takes not kept are left to expire", it.settings.provider)
    prepared = preprocess_image(spec.image, it.request.size, spec.fit) if spec.image else None
    keys = [
        job_key(client.base_url, it.request, prepared, take_request_id(spec.request_id, n)) for n in range(1, takes + 1)
    ]
    earlier = it.reviews.find(review.review_key(keys))
    if earlier is not None:
        logger.info("this review was decided before (%s): carried out from its record, nothing asked", earlier.decision)
        return _carry_out(it, earlier, rounds=0, how="already decided")

    futures = [
        make_take.submit(
            n,
            it.request,
            it.settings,
            prepared,
            spec.request_id,
            it.receipts_at,
            it.delivery.output,
            it.delivery.bucket,
        )
        for n in range(1, takes + 1)
    ]
    made: list[Take] = [future.result() for future in futures]
    round_number, remixes, problem = 1, 0, ""
    while True:
        decision = _ask(it, made, round_number, max_rounds - remixes, problem)
        problem = decision.problem
        if decision.kind in ("take", "reject", "timeout"):
            break
        if decision.kind == "remix" and decision.take is not None:
            remixes += 1
            source = made[decision.take - 1]
            made.append(
                remix_take(
                    len(made) + 1,
                    source,
                    decision.note,
                    round_number,
                    it.settings,
                    spec.request_id,
                    it.receipts_at,
                    it.delivery.output,
                    it.delivery.bucket,
                )
            )
        round_number += 1
    number = review.kept_take(decision, on_timeout)
    record = ReviewRecord(
        review.review_key(keys), decision.kind, decision.by, [take.to_dict() for take in made], take=number
    )
    # Before anything is delivered or deleted: a deleted take's job can no longer be followed.
    it.reviews.record(record)
    return _carry_out(it, record, rounds=round_number)


def _ask(it: _Review, takes: list[Take], round_number: int, remixes_left: int, problem: str) -> Decision:
    """Wait for the decision of one round; on a run executed again after a suspend, the stored one."""
    key = f"review-{round_number}"
    run_id = flow_run_id()
    replay = answered(key)  # this round waited in an earlier execution of this run
    deadline = time.time() + it.timeout
    url = run_url(run_id)
    intro = _instructions(it, takes, round_number, remixes_left, deadline)
    if problem:
        intro.insert(0, f"**The last answer was unclear: {markdown_text(problem)}.** Choose again.")
    title = f"Pick a take: {markdown_text(it.spec.prompt, 120)}"
    description = it.markdown(takes, title, intro)
    if not replay:
        it.history(description, f"Review round {round_number}: {len(takes)} takes, waiting")
        emit_review_event(
            "waiting",
            run_id,
            url=url,
            round=round_number,
            remixes_left=remixes_left,
            deadline=deadline,
            mode="suspended" if from_a_deployment() else "paused",
            takes=[
                {"take": take.number, "video_id": take.video_id, "thumbnail_uri": take.thumbnail_uri} for take in takes
            ],
        )
        review.publish(review.Waiting(run_id, url, round_number, takes, remixes_left, deadline, problem))
        get_run_logger().info("waiting for a decision on %d takes: %s", len(takes), url or run_id)
    answer = wait_for_decision(decision_form(len(takes), remixes_left), description, key=key, timeout=it.timeout)
    decision = review.interpret(answer, len(takes), remixes_left)
    # Seen for the first time in this execution unless a later round waited already.
    if not answered(f"review-{round_number + 1}"):
        chosen = takes[decision.take - 1] if decision.take and decision.kind in ("take", "remix") else None
        emit_review_event(
            "decided",
            run_id,
            url=url,
            round=round_number,
            decision=decision.kind,
            by=decision.by,
            take=decision.take,
            video_id=chosen.video_id if chosen else None,
            note=decision.note or None,
            problem=decision.problem or None,
        )
        review.publish(review.Decided(run_id, round_number, decision))
        if from_a_deployment() and decision.by == "person":
            cancel_deadline(run_id, key)
        get_run_logger().info("round %d decided: %s", round_number, decision.describe())
    return decision


def _instructions(it: _Review, takes: list[Take], round_number: int, remixes_left: int, deadline: float) -> list[str]:
    first = takes[0]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(deadline))
    after = "take 1 is delivered" if it.on_timeout == "first" else "nothing is delivered"
    remix = (
        f"**Remix of** a take with a **Note** (the remix prompt) makes another take ({remixes_left} "
        f"{'round' if remixes_left == 1 else 'rounds'} left); "
        if remixes_left > 0
        else ""
    )
    return [
        f"Round {round_number}: {len(takes)} takes, {first.duration} s {first.resolution} {first.model}; "
        f"the pick goes to {markdown_code(it.delivery.output)}.",
        f"Fill one field: **Take** keeps that take and deletes the others at the provider; {remix}"
        "**Reject** keeps none.",
        f"No decision by {when}: {after}.",
    ]


def _carry_out(it: _Review, record: ReviewRecord, *, rounds: int, how: str = "decided") -> ReviewResult | State:
    """Deliver the recorded pick (if any) like ``generate_video``, delete every other take; then mark it done."""
    logger = get_run_logger()
    kept = record.kept()
    video = _deliver(it, kept) if kept is not None else None
    if record.done:
        deleted = list(record.deleted)  # sent before: not again
    else:
        others = [take.video_id for take in record.all_takes() if kept is None or take.video_id != kept.video_id]
        deleted = delete_takes(others, it.settings)
        it.reviews.record(replace(record, done=True, delivered_uri=video.uri if video else None, deleted=deleted))
    takes = record.all_takes()
    message = _message(record, kept, video, deleted, it.timeout)
    result = ReviewResult(
        decision=record.decision,
        by=record.by,
        take=kept.number if kept else None,
        video=video,
        takes=[_take_result(take) for take in takes],
        deleted=deleted,
        rounds=rounds,
        how=how,
        message=message,
    )
    verdict = [markdown_text(message)] + (
        ["Carried out from an earlier run's decision: nothing asked, nothing paid."] if rounds == 0 else []
    )
    title = (
        f"Review: take {kept.number} kept"
        if kept
        else f"Review: {'no decision in time' if record.decision == 'timeout' else 'rejected'}"
    )
    it.history(it.markdown(takes, title, verdict), message)
    logger.info(message)
    if record.decision == "timeout" and kept is None:
        raise ReviewTimeoutError(message)
    if kept is None:
        return Completed(name="Rejected", message=message, data=result)
    return result


def _deliver(it: _Review, take: Take) -> VideoResult:
    """The kept take at the output, as ``generate_video`` delivers (found with no API call if it already is)."""
    done = find_delivered(it.receipts, take.key, it.delivery.output, model=take.model, s3=it.delivery.s3_client())
    if done is not None:
        get_run_logger().info("take %d already delivered at %s", take.number, done.uri)
        return already_delivered(done)
    request = take.as_request()
    rendered = {"status": "completed", "expires_at": take.expires_at}
    try:
        result = deliver(
            take.video_id,
            request,
            it.settings,
            it.delivery,
            rendered,
            {},
            previews=it.previews,
            fingerprint=take.key,
            summary=it.summary,
        )
    except Exception as error:
        keep_for_collection(error, take.video_id, request, it.delivery, it.settings, it.api, it.ledger)
        raise
    result = result.model_copy(update={"how": take.how})
    record_delivery(it.receipts, take.key, result)
    return result


def _message(
    record: ReviewRecord, kept: Take | None, video: VideoResult | None, deleted: list[str], timeout: int
) -> str:
    gone = f"{len(deleted)} other {'take' if len(deleted) == 1 else 'takes'} deleted at the provider"
    if kept is not None and video is not None:
        why = (
            f"no decision within {timeout} s, so take {kept.number}"
            if record.decision == "timeout"
            else f"take {kept.number}"
        )
        return f"{why} ({kept.video_id}) delivered to {video.uri}; {gone}"
    if record.decision == "timeout":
        return f"no decision within {timeout} s: nothing delivered; {len(deleted)} takes deleted at the provider"
    return f"every take rejected: nothing delivered; {len(deleted)} takes deleted at the provider"


def _take_result(take: Take) -> TakeResult:
    return TakeResult(
        number=take.number,
        video_id=take.video_id,
        duration=int(take.duration) if str(take.duration).isdigit() else 0,
        resolution=take.resolution,
        model=take.model,
        prompt=take.prompt,
        how=take.how,
        remix_of=take.remix_of,
        thumbnail_uri=take.thumbnail_uri,
        spritesheet_uri=take.spritesheet_uri,
    )


@flow(name="expire-review")
def expire_review(flow_run_id: str, key: str) -> str:
    """A review's deadline: if its run still waits at ``key``, resume it with ``timed_out`` (the review
    then ends as its ``on_timeout`` says); scheduled by a suspended review for its deadline."""
    if expire(flow_run_id, key):
        get_run_logger().info("review %s: deadline passed at %s, resumed with timed_out", flow_run_id, key)
        return "timed out"
    get_run_logger().info("review %s: decided before its deadline (%s)", flow_run_id, key)
    return "decided before the deadline"
