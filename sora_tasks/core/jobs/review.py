"""Takes and review without an orchestrator: several takes of one request, a person's pick, only the pick delivered.

Generative video is a numbers game: a few takes of a prompt are made and a person keeps
the best one, or asks for a remix of one. The pieces every engine shares live here:

- each take is its own paid job with its own receipt (``request_id#take-N``), a remix
  too (``request_id#remix-R``), so a rerun or a re-executed run follows them, paying
  nothing again;
- a take's previews go to a ``takes/`` folder beside where the pick would be delivered;
- an answer (a form's fields, a terminal line) is read into one :class:`Decision`, and an
  unclear one is asked again rather than guessed;
- the final decision is recorded (:class:`Reviews`, beside the receipts) *before* anything
  is delivered or deleted: a takes' job deleted at the provider can no longer be followed,
  so a rerun reads the decision instead of paying for the takes again;
- :func:`review` is the whole review on the plain core (the CLI without Prefect); the
  ``review_video`` flow does the same with Prefect tasks and a paused or suspended run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..api.client import ProgressCallback, VideosClient
from ..api.request import VideoRequest
from ..errors import InvalidRequestError, VideoNotReadyError
from ..ids import is_safe_id
from ..media.images import PreparedImage
from ..storage.destinations import PREVIEW_EXTENSIONS, S3Client, presign, resolve_destination
from ..storage.receipts import Receipts
from ..storage.records import RecordStore
from ..text import shown
from . import pipeline
from .derived import DerivedRequest, request_of
from .progress import Feed

logger = logging.getLogger("sora_tasks")

MAX_TAKES = 8
OnTimeout = Literal["reject", "first"]
ON_TIMEOUT: tuple[OnTimeout, ...] = ("reject", "first")
TAKES_FOLDER = "takes"
# A local preview is shown inline (a data: URL in the form and the artifact) up to this size;
# a thumbnail is a few kB, and the form's description is stored in the Prefect database.
INLINE_PREVIEW_BYTES = 256 * 1024


def take_request_id(request_id: str | None, number: int) -> str:
    """Take N's request id: its own paid job, the same one on every rerun of this request."""
    return f"{request_id or ''}#take-{number}"


def remix_request_id(request_id: str | None, round_number: int) -> str:
    """The remix asked in round R: a separate job from a remix asked in another round."""
    return f"{request_id or ''}#remix-{round_number}"


def check_review(takes: int, timeout: float, on_timeout: str, max_rounds: int) -> None:
    """Refuse, before anything is paid, a review that cannot be run as asked."""
    if not isinstance(takes, int) or not 1 <= takes <= MAX_TAKES:
        raise InvalidRequestError(f"takes must be a number from 1 to {MAX_TAKES}, got {shown(takes)}")
    if not timeout or timeout <= 0:
        raise InvalidRequestError(f"timeout must be a positive number of seconds, got {shown(timeout)}")
    if on_timeout not in ON_TIMEOUT:
        raise InvalidRequestError(f"on_timeout must be one of {', '.join(ON_TIMEOUT)}, got {shown(on_timeout)}")
    if not isinstance(max_rounds, int) or max_rounds < 0:
        raise InvalidRequestError(f"max_rounds must be 0 or more remix rounds, got {shown(max_rounds)}")


def preview_base(output: str, video_id: str, model: str) -> str:
    """Where a take's previews go, as if it were a video: ``<output's folder>/takes/<video_id>.mp4``.

    Beside the pick's destination (the same bucket, folder and credentials), one name per
    take whatever ``output`` is: a fixed ``fox.mp4`` would give every take the same previews.
    """
    where = resolve_destination(output, video_id=video_id, model=model).uri
    folder = where.rpartition("/")[0]
    return f"{folder}/{TAKES_FOLDER}/{video_id.replace('/', '_')}.mp4"


def browser_url(uri: str | None, *, s3: S3Client | None = None, seconds: int = 7 * 24 * 3600) -> str | None:
    """What a browser on another machine loads for a stored preview: a presigned URL for ``s3://``,
    the file's bytes as a ``data:`` URL for a local file (a browser never opens a page's ``file://``
    links); None for a local file that is missing or too big to inline."""
    if not uri:
        return None
    if uri.startswith("s3://"):
        return presign(uri, seconds, s3)
    path = Path(uri)
    types = {extension: content_type for content_type, extension in PREVIEW_EXTENSIONS.items()}
    if path.suffix not in types or not path.is_file() or path.stat().st_size > INLINE_PREVIEW_BYTES:
        return None
    return f"data:{types[path.suffix]};base64,{base64.b64encode(path.read_bytes()).decode()}"


@dataclass(frozen=True)
class Take:
    """One take: its job, how it was made and where its previews are."""

    number: int
    video_id: str
    key: str  # the job's receipt key (its fingerprint on this server), also the delivered object's
    prompt: str
    model: str
    duration: str
    resolution: str
    how: str = "created"  # created, resumed, recreated
    remix_of: int | None = None  # a remix: the take it was made from
    thumbnail_uri: str | None = None
    spritesheet_uri: str | None = None
    expires_at: int | None = None

    def as_request(self) -> VideoRequest:
        """The take as the request it answers (for the delivered object's metadata)."""
        return request_of({"model": self.model, "seconds": self.duration, "size": self.resolution}, self.prompt)

    def made(self) -> str:
        """How a person reads its origin: "take" or "remix of 2: <note>"."""
        return f"remix of {self.remix_of}: {self.prompt}" if self.remix_of is not None else "take"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Take:
        take = cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
        if not is_safe_id(take.video_id):
            raise InvalidRequestError(f"take {take.number} names an unsafe video id {shown(take.video_id)}")
        return take


DecisionKind = Literal["take", "remix", "reject", "timeout", "unclear"]


@dataclass(frozen=True)
class Decision:
    """What a person (or the deadline) decided in one round."""

    kind: DecisionKind
    take: int | None = None  # take: the one to deliver; remix: the one to remix
    note: str = ""  # remix: the new prompt
    problem: str = ""  # unclear: why, said back to the person
    by: Literal["person", "timeout"] = "person"

    def describe(self) -> str:
        if self.kind == "take":
            return f"take {self.take}"
        if self.kind == "remix":
            return f"remix of take {self.take}: {self.note}"
        if self.kind == "unclear":
            return f"unclear answer ({self.problem})"
        return self.kind


def _number(value: Any) -> int:
    if value in (None, "", False):
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"not a number: {shown(value)}")
    return int(value)


def interpret(answer: Mapping[str, Any], count: int, remixes_left: int) -> Decision:
    """A form's fields (``take``, ``remix_of`` + ``note``, ``reject``; ``timed_out`` from the deadline)
    as one decision. Anything else (two choices, an unknown take, a remix without a note, a
    remix when no round is left, nothing at all) is ``unclear``: asked again, never guessed.
    """
    if answer.get("timed_out"):
        return Decision("timeout", by="timeout")
    try:
        take, remix_of = _number(answer.get("take")), _number(answer.get("remix_of"))
    except ValueError as error:
        return Decision("unclear", problem=str(error))
    note = str(answer.get("note") or "").strip()
    reject = bool(answer.get("reject"))
    chosen = [name for name, given in (("take", take), ("remix_of", remix_of), ("reject", reject)) if given]
    if len(chosen) != 1:
        problem = "nothing was chosen" if not chosen else f"choose one of {', '.join(chosen)}"
        return Decision("unclear", problem=problem)
    if reject:
        return Decision("reject")
    number = take or remix_of
    if not 1 <= number <= count:
        return Decision("unclear", problem=f"there is no take {number} (1 to {count})")
    if take:
        return Decision("take", take=take)
    if remixes_left <= 0:
        return Decision("unclear", problem="no remix round is left: keep a take or reject")
    if not note:
        return Decision("unclear", problem=f"a remix of take {remix_of} needs a note (the remix prompt)")
    return Decision("remix", take=remix_of, note=note)


def parse_answer(text: str, count: int, remixes_left: int) -> Decision:
    """A terminal's answer: ``2`` keeps take 2, ``r 2 warmer light`` remixes it, ``x`` rejects them all."""
    words = text.strip().split(maxsplit=2)
    if not words:
        return Decision("unclear", problem="nothing was chosen")
    head = words[0].lower()
    if head in ("x", "reject"):
        return interpret({"reject": True}, count, remixes_left)
    if head in ("r", "remix"):
        if len(words) < 2 or not words[1].isdigit():
            return Decision("unclear", problem="a remix is `r N <note>`, N a take number")
        return interpret({"remix_of": words[1], "note": words[2] if len(words) > 2 else ""}, count, remixes_left)
    if head.isdigit() and len(words) == 1:
        return interpret({"take": head}, count, remixes_left)
    return Decision("unclear", problem=f"{shown(text.strip())} is not a take number, `r N <note>` or `x`")


def answer_of(decision: Decision) -> dict[str, Any]:
    """The form's fields that say ``decision`` (for resuming a run from a terminal)."""
    if decision.kind == "take":
        return {"take": decision.take}
    if decision.kind == "remix":
        return {"remix_of": decision.take, "note": decision.note}
    if decision.kind == "reject":
        return {"reject": True}
    raise ValueError(f"{decision.kind} is not a person's answer")


def kept_take(decision: Decision, on_timeout: OnTimeout) -> int | None:
    """The take a final decision delivers: the pick, take 1 on a timeout with ``on_timeout="first"``, else none."""
    if decision.kind == "take":
        return decision.take
    if decision.kind == "timeout" and on_timeout == "first":
        return 1
    return None


def review_key(take_keys: Sequence[str]) -> str:
    """One name per review: the same takes of the same request on the same server."""
    return hashlib.sha256(("review\n" + "\n".join(take_keys)).encode()).hexdigest()


@dataclass(frozen=True)
class ReviewRecord:
    """A review's final decision, written before anything is delivered or deleted; ``done`` once both are."""

    key: str
    decision: str  # take, reject or timeout
    by: str  # person or timeout
    takes: list[dict[str, Any]]
    take: int | None = None  # the take delivered; None: nothing
    decided_at: float = field(default_factory=time.time)
    done: bool = False
    delivered_uri: str | None = None
    deleted: list[str] = field(default_factory=list)

    def all_takes(self) -> list[Take]:
        return [Take.from_dict(data) for data in self.takes]

    def as_decision(self) -> Decision:
        kinds: dict[str, DecisionKind] = {"take": "take", "reject": "reject", "timeout": "timeout"}
        return Decision(
            kinds.get(self.decision, "reject"), take=self.take, by="timeout" if self.by == "timeout" else "person"
        )

    def kept(self) -> Take | None:
        return next((take for take in self.all_takes() if take.number == self.take), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReviewRecord:
        data = json.loads(text)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


class Reviews:
    """Review records beside the receipts (``<receipts>/reviews``): every worker that sees one sees the other."""

    def __init__(self, receipts: Receipts, client: S3Client | None = None) -> None:
        self.location = f"{receipts.location.rstrip('/')}/reviews"
        self._store = RecordStore(self.location, client, what="reviews")

    def find(self, key: str) -> ReviewRecord | None:
        """The record under ``key``; one that does not parse or names unsafe ids is ignored (with a warning)."""
        text = self._store.get(key)
        if text is None:
            return None
        try:
            record = ReviewRecord.from_json(text)
            record.all_takes()
        except (ValueError, TypeError, KeyError) as error:
            logger.warning("review record %s in %s is unreadable, ignored: %s", key, self.location, shown(str(error)))
            return None
        if record.key != key:
            logger.warning("review record %s in %s is filed under another key: ignored", key, self.location)
            return None
        return record

    def record(self, record: ReviewRecord) -> None:
        self._store.put(record.key, record.to_json())


def delete_takes(client: VideosClient, video_ids: Sequence[str]) -> list[str]:
    """Delete these jobs at the provider; returns those gone (deleted now, or already).

    Idempotent: a re-executed run deletes again, and a job already gone counts as deleted.
    A provider that cannot delete leaves them to expire (the client warns).
    """
    gone: list[str] = []
    for video_id in video_ids:
        if client.delete(video_id):
            gone.append(video_id)
            continue
        try:
            client.retrieve(video_id)
        except VideoNotReadyError as error:
            if error.status == "not_found":
                gone.append(video_id)
    return gone


# The plain engine: the CLI's review without Prefect.

Ask = Callable[[list["Take"], int, int, str], Decision]
"""``ask(takes, round, remixes_left, problem)``: the person's decision (a terminal prompt); ``problem``
says what was unclear in the last answer ("" in a fresh round)."""


@dataclass(frozen=True)
class ReviewOutcome:
    """What a review ended with: the decision, the delivered take (None: nothing) and what was deleted."""

    decision: Decision
    takes: list[Take]
    kept: Take | None = None
    delivered: pipeline.Delivered | None = None
    deleted: list[str] = field(default_factory=list)
    rounds: int = 1
    how: str = "decided"  # decided, or already decided (an earlier run's record: nothing asked or paid)


@dataclass(frozen=True)
class TakeJobs:
    """What every take of one review shares: the server, the receipts, where previews go."""

    client: VideosClient
    output: str
    receipts: Receipts
    s3: S3Client | None = None
    previews: bool = True  # the delivered pick's previews, beside it (the takes always have theirs)
    max_wait: float = 1200.0
    poll_interval: float = 5.0
    on_progress: ProgressCallback | None = None
    on_submitted: Callable[[pipeline.Submitted], None] | None = None

    def follow(self, take: Take) -> Take:
        """Wait for the take's job, then store its previews in the takes folder."""
        video = pipeline.wait(
            self.client,
            take.video_id,
            max_wait=self.max_wait,
            poll_interval=self.poll_interval,
            on_progress=self.on_progress,
        )
        pipeline.ensure_collectable(video)
        take = replace(
            take,
            model=str(video.model),
            duration=str(video.seconds),
            resolution=str(video.size),
            expires_at=video.expires_at,
        )
        # A take's previews are how a person judges it: made whatever ``previews`` says of the delivery.
        stored = pipeline.deliver_previews(
            self.client,
            take.video_id,
            preview_base(self.output, take.video_id, take.model),
            model=take.model,
            s3=self.s3,
        )
        return replace(take, thumbnail_uri=stored.get("thumbnail"), spritesheet_uri=stored.get("spritesheet"))

    def submit(self, number: int, plan: pipeline.JobPlan, prompt: str, remix_of: int | None = None) -> Take:
        submitted = pipeline.submit_job(self.client, plan, receipts=self.receipts)
        if self.on_submitted is not None:
            self.on_submitted(submitted)
        receipt = submitted.receipt
        model, seconds, size = (
            (receipt.model, receipt.duration, receipt.resolution) if receipt is not None else ("", "", "")
        )
        return Take(number, submitted.video_id, plan.key, prompt, model, seconds, size, submitted.how, remix_of)


def make_takes(
    jobs: TakeJobs, request: VideoRequest, image: PreparedImage | None, count: int, request_id: str | None
) -> list[Take]:
    """``count`` takes of ``request``: every job created (or followed) first, so they render side by side."""
    client = jobs.client
    submitted = [
        jobs.submit(
            number, pipeline.plan_job(client, request, image, take_request_id(request_id, number)), request.prompt
        )
        for number in range(1, count + 1)
    ]
    return [jobs.follow(take) for take in submitted]


def remix_take(jobs: TakeJobs, source: Take, note: str, number: int, round_number: int, request_id: str | None) -> Take:
    """Take ``number``: a remix of ``source`` per ``note`` (paid once, receipted)."""
    request = DerivedRequest.build("remix", note, source.video_id)
    plan = pipeline.plan_job(jobs.client, request, request_id=remix_request_id(request_id, round_number))
    return jobs.follow(jobs.submit(number, plan, note, remix_of=source.number))


def deliver_take(jobs: TakeJobs, take: Take) -> pipeline.Delivered:
    """The kept take at the output, like any delivery (checked MP4, previews, receipt completed)."""
    done = pipeline.find_delivered(jobs.receipts, take.key, jobs.output, model=take.model, s3=jobs.s3)
    if done is not None:
        return done
    video, _ = jobs.client.retrieve(take.video_id)
    pipeline.ensure_collectable(video)
    delivered = pipeline.deliver(
        jobs.client, video, jobs.output, prompt=take.prompt, s3=jobs.s3, previews=jobs.previews, fingerprint=take.key
    )
    delivered = replace(delivered, how=take.how)
    pipeline.record_delivery(jobs.receipts, take.key, delivered)
    return delivered


def finish(jobs: TakeJobs, reviews: Reviews, record: ReviewRecord) -> tuple[pipeline.Delivered | None, list[str]]:
    """Carry out a recorded decision: deliver the kept take (if any), delete the others; then mark it done."""
    kept = record.kept()
    if record.done:
        # Carried out before: the delivery is found with no API call, the deletions are not sent again.
        found = (
            pipeline.find_delivered(jobs.receipts, kept.key, jobs.output, model=kept.model, s3=jobs.s3)
            if kept
            else None
        )
        return found or (deliver_take(jobs, kept) if kept is not None else None), list(record.deleted)
    delivered = deliver_take(jobs, kept) if kept is not None else None
    others = [take.video_id for take in record.all_takes() if kept is None or take.video_id != kept.video_id]
    deleted = delete_takes(jobs.client, others)
    reviews.record(replace(record, done=True, delivered_uri=delivered.uri if delivered else None, deleted=deleted))
    return delivered, deleted


def review(
    jobs: TakeJobs,
    request: VideoRequest,
    image: PreparedImage | None,
    ask: Ask,
    *,
    count: int,
    request_id: str | None = None,
    max_rounds: int = 3,
    on_timeout: OnTimeout = "reject",
) -> ReviewOutcome:
    """Make ``count`` takes, ask, remix and ask again (at most ``max_rounds`` remixes), then deliver the pick.

    A review already decided (its record) is carried out again from the record, with no
    take made or followed and nothing asked: its other takes may already be deleted.
    """
    client = jobs.client
    keys = [
        pipeline.job_key(client.base_url, request, image, take_request_id(request_id, n)) for n in range(1, count + 1)
    ]
    reviews = Reviews(jobs.receipts, jobs.s3)
    key = review_key(keys)
    earlier = reviews.find(key)
    if earlier is not None:
        logger.info("review already decided (%s): carried out from its record, nothing asked", earlier.decision)
        delivered, deleted = finish(jobs, reviews, earlier)
        decision = earlier.as_decision()
        return ReviewOutcome(decision, earlier.all_takes(), earlier.kept(), delivered, deleted, how="already decided")
    takes = make_takes(jobs, request, image, count, request_id)
    round_number, remixes, problem = 1, 0, ""
    while True:
        decision = ask(takes, round_number, max_rounds - remixes, problem)
        problem = decision.problem
        if decision.kind == "remix" and decision.take is not None:
            remixes += 1
            source = takes[decision.take - 1]
            takes.append(remix_take(jobs, source, decision.note, len(takes) + 1, round_number, request_id))
        if decision.kind in ("take", "reject", "timeout"):
            break
        round_number += 1
    number = kept_take(decision, on_timeout)
    record = ReviewRecord(key, decision.kind, decision.by, [take.to_dict() for take in takes], take=number)
    reviews.record(record)
    delivered, deleted = finish(jobs, reviews, record)
    kept = takes[number - 1] if number is not None else None
    return ReviewOutcome(decision, takes, kept, delivered, deleted, rounds=round_number)


# A process-local feed of review moments, like :mod:`.progress`: a terminal in the process that runs
# the flow shows the takes and takes the answer while the run waits for it.


@dataclass(frozen=True)
class Waiting:
    """A run waits for a decision on these takes (``url``: the paused run's page in the Prefect UI)."""

    flow_run_id: str
    url: str | None
    round: int
    takes: list[Take]
    remixes_left: int
    deadline: float
    problem: str = ""


@dataclass(frozen=True)
class Decided:
    """The run got its decision (from the form, a terminal, the API or the deadline)."""

    flow_run_id: str
    round: int
    decision: Decision


Moment = Waiting | Decided
# Every review moment in this process (the CLI's `takes` listens).
_moments: Feed[Moment] = Feed()
subscribe = _moments.subscribe
publish = _moments.publish
