"""One long video from a storyboard: the first shot is made, then extended shot by shot.

Every shot is a paid job with a receipt, and the receipts are chained: shot k's
fingerprint holds shot k-1's receipt key, so every key is known before any job exists.
A rerun therefore needs no API call to see the final video is already delivered, and
otherwise resumes from the last shot an earlier run paid for whose job is still usable
(found by reading the receipts from the last shot back): nothing before it is paid
again. Only the final video (the first shot followed by every extension, one stream)
is delivered.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..api.providers import ProviderProfile
from ..api.references import check_prompt
from ..api.request import VideoRequest
from ..errors import InvalidRequestError, StoryboardError, VideoNotReadyError, VideoQualityError
from ..media.quality import Expectation, QualityPolicy
from ..storage.destinations import S3Client
from ..storage.receipts import Receipt, Receipts, receipt_key
from .derived import DerivedRequest, check_extension_duration

if TYPE_CHECKING:
    from openai.types import Video

    from ..api.client import ProgressCallback, VideosClient
    from ..media.images import PreparedImage
    from .pipeline import Delivered, JobPlan, Submitted

logger = logging.getLogger("sora_tasks")

ShotDurations = int | str | Sequence[int | str]


def check_shots(shots: object) -> list[str]:
    """A non-empty list of non-empty prompts, one a shot."""
    if isinstance(shots, str) or not isinstance(shots, Sequence) or not shots:
        raise InvalidRequestError("shots must be a non-empty list of prompts, one a shot")
    return [check_prompt(prompt, f"shot {index} prompt") for index, prompt in enumerate(shots, start=1)]


def shot_durations(duration: ShotDurations, count: int) -> list[str]:
    """Each shot's length as given: one value for every shot, or one a shot (checked by :meth:`Storyboard.build`)."""
    if isinstance(duration, (int, str)):
        return [str(duration).strip()] * count
    values = list(duration)
    if len(values) != count:
        raise InvalidRequestError(
            f"duration must be one number of seconds, or one a shot ({count} shots), got {len(values)} values"
        )
    return [str(value).strip() for value in values]


@dataclass(frozen=True)
class Shot:
    index: int  # 1-based
    prompt: str
    seconds: str  # this shot's own length
    key: str  # its receipt key; shot k's fingerprint holds shot k-1's key


@dataclass(frozen=True)
class Storyboard:
    """Checked shots: the first shot's create request, then each extension's prompt and length."""

    first: VideoRequest
    extensions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(
        cls,
        profile: ProviderProfile,
        shots: Sequence[str],
        *,
        model: str,
        resolution: str = "1280x720",
        duration: ShotDurations = 4,
        extra: dict[str, Any] | None = None,
    ) -> Storyboard:
        """Validate everything before anything is paid; raises ``InvalidRequestError`` naming the field."""
        prompts = check_shots(shots)
        durations = shot_durations(duration, len(prompts))
        try:
            first = profile.build_request(
                prompts[0], model=model, duration=durations[0], resolution=resolution, extra=extra
            )
        except InvalidRequestError as error:
            raise InvalidRequestError(f"shot 1: {error}") from error
        # Extensions take 4, 8, 12, 16 or 20 s, whatever the provider's create takes.
        extensions = [
            check_extension_duration(seconds, f"duration of shot {index}")
            for index, seconds in enumerate(durations[1:], start=2)
        ]
        if len(prompts) > 1:
            profile.require("extend", source="id")
        return cls(first, tuple(zip(prompts[1:], extensions, strict=True)))

    @property
    def count(self) -> int:
        return 1 + len(self.extensions)

    @property
    def total_seconds(self) -> int:
        return int(self.first.seconds) + sum(int(seconds) for _, seconds in self.extensions)

    @property
    def prompts(self) -> list[str]:
        return [self.first.prompt, *(prompt for prompt, _ in self.extensions)]

    def plan(self, base_url: str, *, image: PreparedImage | None = None, request_id: str | None = None) -> Plan:
        """Every shot's receipt key on the server at ``base_url``, each chained to the one before."""
        key = receipt_key(
            base_url, self.first.fingerprint(image_sha256=image.sha256 if image else None, request_id=request_id)
        )
        shots = [Shot(1, self.first.prompt, self.first.seconds, key)]
        for index, (prompt, seconds) in enumerate(self.extensions, start=2):
            link = DerivedRequest("extend", prompt, seconds=seconds, follows=shots[-1].key)
            shots.append(Shot(index, prompt, seconds, receipt_key(base_url, link.fingerprint(request_id=request_id))))
        return Plan(self, tuple(shots), image, request_id)


@dataclass(frozen=True)
class Plan:
    """A storyboard placed on one server: its shots with their chained receipt keys."""

    storyboard: Storyboard
    shots: tuple[Shot, ...]
    image: PreparedImage | None = None
    request_id: str | None = None

    @property
    def final(self) -> Shot:
        return self.shots[-1]

    @property
    def model(self) -> str:
        return self.storyboard.first.model

    @property
    def prompt(self) -> str:
        """The prompts joined, one a line: what the delivered video's prompt-sha256 is of."""
        return "\n".join(self.storyboard.prompts)

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()

    def extension(self, shot: Shot, source_video_id: str) -> DerivedRequest:
        """Shot ``shot`` (2 or later) as an extension of the previous shot's finished video."""
        return DerivedRequest(
            "extend",
            shot.prompt,
            video_id=source_video_id,
            seconds=shot.seconds,
            follows=self.shots[shot.index - 2].key,
        )

    def job(self, client: VideosClient, shot: Shot, previous_video_id: str | None) -> JobPlan:
        """How to make ``shot``: the create (shot 1) or the extension of ``previous_video_id``."""
        from .pipeline import plan_job

        if shot.index == 1:
            return plan_job(client, self.storyboard.first, self.image, self.request_id, key=shot.key)
        if previous_video_id is None:
            raise InvalidRequestError(
                f"shot {shot.index} cannot be made: shot {shot.index - 1}'s video is not known (its receipt is gone)"
            )
        return plan_job(client, self.extension(shot, previous_video_id), key=shot.key)


@dataclass(frozen=True)
class ShotOutcome:
    index: int
    prompt: str
    seconds: int  # this shot's own length
    video_id: str  # its job: the video up to and including this shot
    how: str  # created, resumed (an earlier run's job), recreated, or already delivered


@dataclass(frozen=True)
class Resume:
    """Where a rerun starts: the last shot with a usable earlier job (None: shot 1, anew), and the
    later shots whose recorded jobs are unusable (failed, expired, gone), which are made again."""

    shot: Shot | None = None
    receipt: Receipt | None = None
    stale: frozenset[int] = frozenset()


def resume_point(client: VideosClient, plan: Plan, receipts: Receipts) -> Resume:
    """The last shot an earlier run paid for whose job is still usable, read from the last shot back."""
    from .pipeline import still_usable

    stale: set[int] = set()
    for shot in reversed(plan.shots):
        receipt = receipts.find(shot.key)
        if receipt is None:
            continue
        if still_usable(client, receipt.video_id):
            return Resume(shot, receipt, frozenset(stale))
        stale.add(shot.index)
    return Resume(stale=frozenset(stale))


def recorded_shots(plan: Plan, receipts: Receipts | None, how: str) -> list[ShotOutcome]:
    """What the receipts say each shot's job was (no API call); shots with no receipt are left out."""
    found = []
    for shot in plan.shots:
        receipt = receipts.find(shot.key) if receipts is not None else None
        if receipt is not None:
            found.append(ShotOutcome(shot.index, shot.prompt, int(shot.seconds), receipt.video_id, how))
    return found


def overall_how(shots: Sequence[ShotOutcome]) -> str:
    """A storyboard's ``how``: created (every shot paid now), resumed (some from an earlier run), recreated."""
    kinds = {shot.how for shot in shots}
    if kinds == {"already delivered"}:
        return "already delivered"
    if "resumed" in kinds:
        return "resumed"
    return "recreated" if "recreated" in kinds else "created"


def shot_failure(
    error: BaseException, plan: Plan, shot: Shot, shot_video_id: str | None, completed: Sequence[ShotOutcome]
) -> StoryboardError:
    """The error when ``shot`` fails: it names the shot, its job (or the last paid one) and how to resume."""
    count = len(plan.shots)
    done = tuple(outcome.video_id for outcome in completed)
    if done:
        last = completed[-1]
        kept = (
            f"shot{'s 1-' if last.index > 1 else ' '}{last.index} paid for and recorded "
            f"(last: {last.video_id}); run it again to resume from shot {shot.index}"
        )
    else:
        kept = "run it again to resume" if shot_video_id else "nothing was paid for"
    cause = str(error)
    return StoryboardError(
        f"storyboard shot {shot.index} of {count} failed: {cause}; {kept}",
        shot=shot.index,
        shots=count,
        video_id=shot_video_id or (done[-1] if done else None),
        shot_video_id=shot_video_id,
        completed=done,
        code=getattr(error, "code", None) or type(error).__name__,
    )


@dataclass(frozen=True)
class StoryboardDelivered:
    delivered: Delivered
    shots: tuple[ShotOutcome, ...]

    @property
    def how(self) -> str:
        return self.delivered.how


def produce_storyboard(
    client: VideosClient,
    plan: Plan,
    output: str,
    *,
    receipts: Receipts | None = None,
    max_wait: float,
    poll_interval: float,
    on_progress: ProgressCallback | None = None,
    on_submitted: Callable[[Shot, Submitted], None] | None = None,
    on_shot: Callable[[ShotOutcome], None] | None = None,
    previews: bool = True,
    s3: S3Client | None = None,
    quality: QualityPolicy | None = None,
) -> StoryboardDelivered:
    """The storyboard's final video at ``output``, paying only for shots no earlier run paid for.

    Already delivered (the final shot's receipt or the output's metadata say so): no API
    call. Otherwise the run resumes from the last usable shot an earlier run paid for,
    waits for it, and extends it shot by shot; each job's receipt is written the moment
    it is answered. A failure raises :class:`StoryboardError` naming the shot and the
    paid video; ``on_shot`` sees each shot as it completes. ``quality`` (default ``fail``)
    checks the final video; ``retry=N`` rejects like ``fail`` (no shot is re-made).
    """
    from .gate import record_rejection
    from .pipeline import Submitted, _submit, deliver, find_delivered, record_delivery, wait

    final = plan.final
    done = find_delivered(receipts, final.key, output, model=plan.model, s3=s3)
    if done is not None:
        logger.info("storyboard already delivered: %s (video %s)", done.uri, done.video_id)
        return StoryboardDelivered(done, tuple(recorded_shots(plan, receipts, "already delivered")))
    completed: list[ShotOutcome] = []
    start = resume_point(client, plan, receipts) if receipts is not None else Resume()
    remaining = plan.shots
    if start.shot is not None and start.receipt is not None:
        logger.info(
            "storyboard: resuming at shot %d of %d (%s)", start.shot.index, len(plan.shots), start.receipt.video_id
        )
        completed = [
            outcome for outcome in recorded_shots(plan, receipts, "resumed") if outcome.index < start.shot.index
        ]
        remaining = plan.shots[start.shot.index - 1 :]
    previous = completed[-1].video_id if completed else None
    video: Video | None = None
    last_submitted: Submitted | None = None
    for shot in remaining:
        shot_video_id: str | None = None
        try:
            if start.shot is not None and start.receipt is not None and shot.index == start.shot.index:
                # Found usable by resume_point just now: followed without asking again.
                submitted = Submitted(start.receipt.video_id, reused=True, key=shot.key, receipt=start.receipt)
            else:
                # Any receipt of a later shot was found unusable by resume_point: made again, said so.
                stale = receipts.find(shot.key) if receipts is not None and shot.index in start.stale else None
                replacing = stale.video_id if stale is not None else None
                submitted = _submit(client, plan.job(client, shot, previous), None, receipts, replacing=replacing)
                submitted = replace(submitted, recreated=shot.index in start.stale)
            shot_video_id = submitted.video_id
            if on_submitted is not None:
                on_submitted(shot, submitted)
            try:
                video = wait(
                    client, submitted.video_id, max_wait=max_wait, poll_interval=poll_interval, on_progress=on_progress
                )
            except VideoNotReadyError as error:
                if error.status != "not_found" or not submitted.reused:
                    raise
                logger.warning("shot %d: video %s vanished from the server; making it again", shot.index, shot_video_id)
                if receipts is not None:
                    receipts.forget(shot.key)
                submitted = replace(
                    _submit(client, plan.job(client, shot, previous), None, receipts, replacing=shot_video_id),
                    recreated=True,
                )
                shot_video_id = submitted.video_id
                video = wait(
                    client, submitted.video_id, max_wait=max_wait, poll_interval=poll_interval, on_progress=on_progress
                )
        except Exception as error:
            raise shot_failure(error, plan, shot, shot_video_id, completed) from error
        outcome = ShotOutcome(shot.index, shot.prompt, int(shot.seconds), submitted.video_id, submitted.how)
        completed.append(outcome)
        last_submitted = submitted
        previous = submitted.video_id
        if on_shot is not None:
            on_shot(outcome)
    assert video is not None and last_submitted is not None
    expected = Expectation.of(plan.storyboard.first.size, plan.storyboard.total_seconds)
    try:
        delivered = deliver(
            client,
            video,
            output,
            prompt=plan.prompt,
            s3=s3,
            previews=previews,
            fingerprint=final.key,
            quality=quality,
            expected=expected,
        )
    except Exception as error:
        if isinstance(error, VideoQualityError):
            record_rejection(receipts, final.key, error, receipt=last_submitted.receipt)
        raise shot_failure(error, plan, final, video.id, completed[:-1]) from error
    delivered = replace(delivered, reused=last_submitted.reused, how=overall_how(completed))
    record_delivery(receipts, final.key, delivered, receipt=last_submitted.receipt)
    return StoryboardDelivered(delivered, tuple(completed))
