"""Prefect's side of a review: the takes as task runs, the decision form, waiting for a person, the deadline.

- Each take is a ``make-take`` task run (``remix-take`` for a remix) holding one slot of
  the account's render limit while its job renders, with ``create-video`` (or
  ``derive-video``), ``wait-for-video`` and ``deliver-previews`` inside: one paid job,
  receipted under the take's own request id, so a rerun follows it.
- The form is a ``RunInput`` built for the takes at hand (``take`` 1..N, ``remix_of`` and
  ``note`` while remix rounds are left, ``reject``); the Prefect UI shows it on the paused
  run, with the takes' table (thumbnails, lengths, video ids) as its description.
- Waiting: a run of a deployment is *suspended* (its process exits, nothing is held; the
  run is executed again from the top once resumed, which receipts make free); any other
  run is *paused* (its process waits).
- The deadline is ours, not Prefect's: when it passes, the run is resumed with
  ``timed_out`` (by a timer in the paused process, or by a scheduled ``expire-review``
  run for a suspended one), so the review itself decides what a timeout means (nothing
  delivered, or take 1) and deletes the takes. Prefect's own pause timeout is set
  ``DEADLINE_GRACE`` later, a backstop that fails a run whose process died.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.states import Scheduled
from prefect.utilities.urls import url_for
from prefect_aws import S3Bucket
from pydantic import ConfigDict, Field, create_model
from pydantic.json_schema import SkipJsonSchema

from .blocks import bucket_client
from .core.api.request import VideoRequest
from .core.api.settings import ApiSettings
from .core.errors import VideoNotReadyError
from .core.jobs import review
from .core.jobs.derived import DerivedRequest
from .core.jobs.pipeline import job_key
from .core.jobs.review import Take, preview_base, remix_request_id, take_request_id
from .core.media.images import PreparedImage
from .core.storage.receipts import Receipts
from .derive_tasks import derive_video
from .tasks import create_video, deliver_previews, rendering_slot, run_related, wait_for_video

logger = logging.getLogger("sora_tasks")

# How often a paused run asks the API whether it was resumed (Prefect's default is 10 s).
POLL_SECONDS = 2
# Prefect's own pause timeout is this much later than the review's deadline: the deadline
# resumes the run in time, and Prefect fails a run nobody can resume any more (its process died).
DEADLINE_GRACE = 300
# The deployment whose scheduled run resumes a suspended review at its deadline.
DEADLINE_DEPLOYMENT = "expire-review/review-timeout"


# The takes' task runs run side by side in the flow's thread pool, where Prefect cannot enforce a
# task's timeout (it warns about each): the steps inside them run without one, and the wait is
# bounded by the API block's max_wait as everywhere. (with_options keeps a task's timeout when given
# None; 0 is how a Task is built with none.)
NO_TIMEOUT = 0
create = create_video.with_options(timeout_seconds=NO_TIMEOUT)
waiter = wait_for_video.with_options(timeout_seconds=NO_TIMEOUT)


@task(name="make-take", task_run_name="take-{number}", cache_policy=NO_CACHE)
def make_take(
    number: int,
    request: VideoRequest,
    settings: ApiSettings,
    image: PreparedImage | None,
    request_id: str | None,
    receipts_at: str,
    output: str,
    bucket: S3Bucket | None = None,
) -> Take:
    """Take ``number`` of ``request``: its own paid job (followed if a receipt names it), rendered, previewed."""
    take_id = take_request_id(request_id, number)
    receipts = Receipts(receipts_at, bucket_client(bucket))
    key = job_key(settings.client().base_url, request, image, take_id)
    earlier = receipts.find(key)
    with rendering_slot(settings):
        video_id = create(request, settings, image, take_id, receipts_at, bucket)
        how = "created" if earlier is None else "resumed" if earlier.video_id == video_id else "recreated"
        try:
            rendered = waiter(video_id, settings, progress_artifact=False)
        except VideoNotReadyError as error:
            if error.status != "not_found":
                raise
            # A receipted job the server no longer knows (deleted, expired): pay for a fresh take.
            get_run_logger().warning("take %d: %s is gone from the server; making it again", number, video_id)
            receipts.forget(key)
            video_id, how = create(request, settings, image, take_id, receipts_at, bucket), "recreated"
            rendered = waiter(video_id, settings, progress_artifact=False)
    take = Take(number, video_id, key, request.prompt, request.model, request.seconds, request.size, how)
    return _previewed(take, rendered, settings, output, bucket)


@task(name="remix-take", task_run_name="take-{number}", cache_policy=NO_CACHE)
def remix_take(
    number: int,
    source: Take,
    note: str,
    round_number: int,
    settings: ApiSettings,
    request_id: str | None,
    receipts_at: str,
    output: str,
    bucket: S3Bucket | None = None,
) -> Take:
    """Take ``number``: ``source`` remixed per ``note`` (one paid job, receipted under the round's request id)."""
    request = DerivedRequest.build("remix", note, source.video_id)
    remix_id = remix_request_id(request_id, round_number)
    key = job_key(settings.client().base_url, request, request_id=remix_id)
    with rendering_slot(settings):
        job = derive_video.with_options(timeout_seconds=NO_TIMEOUT)(request, settings, remix_id, receipts_at, bucket)
        rendered = waiter(job.video_id, settings, progress_artifact=False)
    take = Take(number, job.video_id, key, note, job.model, job.seconds, job.size, job.how, remix_of=source.number)
    return _previewed(take, rendered, settings, output, bucket)


def _previewed(
    take: Take, rendered: dict[str, Any], settings: ApiSettings, output: str, bucket: S3Bucket | None
) -> Take:
    """The take as rendered, with its previews in the takes folder: how a person judges it, so they are
    made whatever the review's ``previews`` (the delivered pick's) says."""
    model = str(rendered.get("model") or take.model)
    take = Take(
        take.number,
        take.video_id,
        take.key,
        take.prompt,
        model,
        str(rendered.get("seconds") or take.duration),
        str(rendered.get("size") or take.resolution),
        take.how,
        take.remix_of,
        expires_at=rendered.get("expires_at"),
    )
    previewer = deliver_previews.with_options(timeout_seconds=NO_TIMEOUT)
    stored = previewer(take.video_id, preview_base(output, take.video_id, model), model, settings, bucket)
    return Take(
        **{**take.to_dict(), "thumbnail_uri": stored.get("thumbnail"), "spritesheet_uri": stored.get("spritesheet")}
    )


@task(name="delete-takes", cache_policy=NO_CACHE)
def delete_takes(video_ids: list[str], settings: ApiSettings) -> list[str]:
    """Delete these takes at the provider (those gone already count as deleted)."""
    if not video_ids:
        return []
    gone = review.delete_takes(settings.client(), video_ids)
    kept = [video_id for video_id in video_ids if video_id not in gone]
    get_run_logger().info(
        "deleted %s at the provider%s",
        ", ".join(gone) or "nothing",
        f"; not deleted: {', '.join(kept)}" if kept else "",
    )
    return gone


class ReviewForm(RunInput):
    """The decision form's base. ``timed_out`` is set by the deadline, never shown in the form: it is
    left out of the form's schema, which therefore admits extra fields (and the model ignores them)."""

    model_config = ConfigDict(extra="ignore")

    timed_out: SkipJsonSchema[bool] = False


def decision_form(count: int, remixes_left: int) -> type[ReviewForm]:
    """The form for ``count`` takes: ``take``, ``remix_of`` and ``note`` (while rounds are left), ``reject``.

    Bounds are in the schema, so the UI and the API refuse a take that does not exist;
    which fields make sense together is read by :func:`~sora_tasks.core.jobs.review.interpret`.
    """
    fields: dict[str, Any] = {
        "take": (int, Field(0, ge=0, le=count, title="Take", description=f"Keep this take (1-{count}): delivered")),
    }
    if remixes_left > 0:
        fields["remix_of"] = (
            int,
            Field(0, ge=0, le=count, title="Remix of", description=f"Or remix this take (1-{count}) per the note"),
        )
        fields["note"] = (str, Field("", title="Note", description="The remix prompt: what to change"))
    fields["reject"] = (bool, Field(False, title="Reject", description="Or reject them all: nothing is delivered"))
    return cast(type[ReviewForm], create_model("ReviewDecision", __base__=ReviewForm, **fields))


def flow_run_id() -> str:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("a review waits inside a flow run")
    return str(context.flow_run.id)


def from_a_deployment() -> bool:
    """A deployment's run can be suspended (a worker or `serve` runs it again once resumed); any other pauses."""
    context = FlowRunContext.get()
    return context is not None and context.flow_run is not None and context.flow_run.deployment_id is not None


def answered_before(key: str) -> bool:
    """This run already passed the wait ``key`` (it is being executed again after a suspend)."""
    context = FlowRunContext.get()
    keys = context.flow_run.empirical_policy.pause_keys if context and context.flow_run else None
    return bool(keys and key in keys)


def run_url(run_id: str) -> str | None:
    return url_for("flow-run", obj_id=run_id)


def emit_review_event(event: str, run_id: str, **payload: Any) -> None:
    """``sora.review.<event>`` (resource ``sora.review.<flow run id>``), with the run, flow and deployment related."""
    emit_event(
        event=f"sora.review.{event}",
        resource={"prefect.resource.id": f"sora.review.{run_id}", "prefect.resource.role": "review"},
        related=run_related(),
        payload=payload,
    )


def expire(run_id: str, key: str) -> bool:
    """Resume the run with ``timed_out`` if it still waits at ``key``; False when a person decided first.

    The resume is one transaction on the server (the state's check and change, and the
    stored answer), so of a person's answer and the deadline exactly one is taken.
    """
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(run_id)).state
        if state is None or not state.is_paused() or state.state_details.pause_key != key:
            return False
        answer = client.resume_flow_run(UUID(run_id), run_input={"timed_out": True})
    return answer.status == SetStateStatus.ACCEPT


@contextmanager
def deadline_timer(run_id: str, key: str, seconds: float) -> Iterator[None]:
    """While a paused run waits in this process: resume it with ``timed_out`` once ``seconds`` pass."""

    def fire() -> None:
        try:
            if expire(run_id, key):
                logger.info("review %s: no decision within %.0f s", run_id, seconds)
        except Exception as error:  # the backstop (Prefect's own timeout) still ends the wait
            logger.warning("review %s: the deadline could not resume the run: %s", run_id, error)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def schedule_deadline(run_id: str, key: str, seconds: float) -> bool:
    """A run of the ``review-timeout`` deployment at the deadline, once per wait (an idempotency key);
    False (with a warning) where that deployment is not registered."""
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(DEADLINE_DEPLOYMENT)
            client.create_flow_run_from_deployment(
                deployment.id,
                parameters={"flow_run_id": run_id, "key": key},
                state=Scheduled(scheduled_time=at),
                idempotency_key=deadline_key(run_id, key),
            )
    except Exception as error:
        get_run_logger().warning(
            "no %s deployment (%s): at the deadline Prefect fails the run instead, and its takes are left to "
            "expire at the provider (`prefect deploy --all`, or serve, registers it)",
            DEADLINE_DEPLOYMENT,
            error,
        )
        return False
    return True


def deadline_key(run_id: str, key: str) -> str:
    return f"sora-review-deadline-{run_id}-{key}"


def cancel_deadline(run_id: str, key: str) -> None:
    """The wait at ``key`` was answered: its scheduled deadline run goes (best effort; it would find
    the run decided and do nothing)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterIdempotencyKey,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    try:
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[deadline_key(run_id, key)]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                )
            )
            for run in found:
                client.delete_flow_run(run.id)
    except Exception as error:
        logger.debug("deadline run of %s at %s not removed: %s", run_id, key, error)


def wait_for_decision(form: type[ReviewForm], description: str, *, key: str, timeout: float) -> dict[str, Any]:
    """The form's answer (its fields as a dict): the run is suspended or paused at ``key`` until then.

    Called again with the same key after a suspend (the run executed from the top), Prefect
    hands back the answer it stored, without waiting.
    """
    described = form.with_initial_data(description=description)
    run_id = flow_run_id()
    if from_a_deployment():
        backstop = int(timeout) + DEADLINE_GRACE
        if not answered_before(key) and not schedule_deadline(run_id, key, timeout):
            backstop = int(timeout)
        answer: ReviewForm = suspend_flow_run(wait_for_input=described, timeout=backstop, key=key)
    else:
        with deadline_timer(run_id, key, timeout):
            answer = pause_flow_run(
                wait_for_input=described, timeout=int(timeout) + DEADLINE_GRACE, poll_interval=POLL_SECONDS, key=key
            )
    return answer.model_dump()
