"""One video from request to destination with no orchestrator: the CLI's default engine.

The same guarantees as the Prefect flows, from the same core: the create is sent once
and an ambiguous failure is reconciled against the server's job list; a receipt of
every paid job lets a rerun of the same request follow that job instead of paying
again; transient failures of reads, downloads and uploads are retried with backoff;
every error raised after the create carries the video id.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from openai.types import Video

from ..api.client import ProgressCallback, VideosClient, job_error
from ..api.request import VideoRequest
from ..api.watcher import JobWatcher
from ..errors import (
    SoraError,
    StorageError,
    TransientError,
    VariantUnavailableError,
    VideoExpiredError,
    VideoNotReadyError,
    VideoQualityError,
)
from ..ids import is_safe_id
from ..media.images import PreparedImage
from ..media.quality import Expectation, QualityPolicy
from ..storage.claims import FOLLOW_POLL, STALE_AFTER, Claim
from ..storage.destinations import (
    PREVIEW_EXTENSIONS,
    PREVIEW_VARIANTS,
    Destination,
    S3Client,
    exact_destination,
    object_metadata,
    resolve_destination,
    store_file,
    stored_object,
    variant_output,
)
from ..storage.listing import Listing
from ..storage.receipts import Receipt, Receipts, receipt_key
from .derived import DerivedRequest
from .gate import check_download, record_rejection, through_quality_retries
from .retries import retry_transient

logger = logging.getLogger("sora_tasks")
T = TypeVar("T")

# A render slot that took longer than this (seconds) to get: the receipt is read again before paying.
RECHECK_AFTER_WAIT = 0.25


@dataclass(frozen=True)
class Submitted:
    video_id: str
    # True when an earlier run's job for the same request was taken up (nothing paid now).
    reused: bool
    # True when an earlier run's job was gone or unusable and a new one was paid for.
    recreated: bool = False
    key: str = ""
    # The job's receipt as recorded (None without a receipt store).
    receipt: Receipt | None = None

    @property
    def how(self) -> str:
        """created, resumed (an earlier run's job) or recreated (the earlier job was gone)."""
        return "recreated" if self.recreated else "resumed" if self.reused else "created"


@dataclass(frozen=True)
class JobPlan:
    """How to make one paid job (a create, remix, edit or extension) and the receipt it is recorded under.

    ``send(reconcile_since)`` sends the one job-making request through the client's
    send-once rules; ``reconcile_since`` (a retry's first attempt time) adopts a job an
    earlier attempt made after all. ``fields`` is the receipt's (model, seconds, size):
    the request's, or, when None (a derived job, whose size and length follow its
    source), the server's answer's.
    """

    key: str
    operation: str
    prompt: str
    send: Callable[[float | None], Video]
    # The model for output templates ({model}) before the job exists; None: not known yet.
    model: str | None = None
    fields: tuple[str, str, str] | None = None
    # The fitted reference image a create was sent, for the quality report's first-frame figure.
    reference: bytes | None = None

    def expectation(self, video: Video) -> Expectation:
        """What the finished video should be: the request's size and length (a derived job: the server's)."""
        _, seconds, size = self.fields or (str(video.model), str(video.seconds), str(video.size))
        return Expectation.of(size, seconds, self.reference)


JobRequest = VideoRequest | DerivedRequest


def plan_job(
    client: VideosClient,
    request: JobRequest,
    image: PreparedImage | None = None,
    request_id: str | None = None,
    *,
    key: str | None = None,
) -> JobPlan:
    """How to make the job for ``request`` (a create, remix, edit or extension), keyed by its
    fingerprint on this server (or ``key``: a storyboard's chained one).

    A derived request is checked against the server's profile first: nothing is planned that
    the server does not do. ``image`` is a create's reference.
    """
    key = key or job_key(client.base_url, request, image, request_id)
    if isinstance(request, DerivedRequest):
        request.check(client.profile)
        derived = request
        return JobPlan(key, derived.operation, derived.prompt, send=lambda since: derived.send(client, since))
    return JobPlan(
        key,
        "create",
        request.prompt,
        send=lambda since: client.create(request, image, reconcile_since=since),
        model=request.model,
        fields=(request.model, request.seconds, request.size),
        reference=image.data if image is not None else None,
    )


def job_key(
    base_url: str, request: JobRequest, image: PreparedImage | None = None, request_id: str | None = None
) -> str:
    """The receipt key (the request's fingerprint on this server), also stored in the video's metadata."""
    if isinstance(request, DerivedRequest):
        fingerprint = request.fingerprint(request_id=request_id)
    else:
        fingerprint = request.fingerprint(image_sha256=image.sha256 if image else None, request_id=request_id)
    return receipt_key(base_url, fingerprint)


def send_job(plan: JobPlan, reconcile_since: float | None = None) -> Video:
    """One paid job, sent once per attempt; a retry of a transient failure first adopts any job
    an earlier attempt made after all (``reconcile_since``: when the first attempt started)."""
    started = time.time()
    return retry_transient(
        lambda attempt: plan.send(reconcile_since if attempt == 1 else (reconcile_since or started)),
        attempts=3,
        what=plan.operation,
    )


def submit(
    client: VideosClient,
    request: JobRequest,
    image: PreparedImage | None = None,
    *,
    request_id: str | None = None,
    receipts: Receipts | None = None,
    reconcile_since: float | None = None,
    before_create: Callable[[], None] | None = None,
) -> Submitted:
    """The job for this request: an earlier run's, if it is still usable, else a new one.

    The receipt is written as soon as the create answers, before anything can lose it.
    ``reconcile_since`` (a retry's first attempt time) adopts a job that attempt made
    after all; ``before_create`` runs right before a paid create (a rate limit).
    """
    plan = plan_job(client, request, image, request_id)
    return submit_job(client, plan, receipts=receipts, reconcile_since=reconcile_since, before_create=before_create)


def submit_job(
    client: VideosClient,
    plan: JobPlan,
    *,
    receipts: Receipts | None = None,
    reconcile_since: float | None = None,
    before_create: Callable[[], None] | None = None,
) -> Submitted:
    """:func:`submit` for any kind of job: the earlier run's (per its receipt) if still usable, else a new one."""
    earlier = receipts.find(plan.key) if receipts is not None else None
    return _submit(client, plan, earlier, receipts, reconcile_since, before_create)


def _submit(
    client: VideosClient,
    plan: JobPlan,
    earlier: Receipt | None,
    receipts: Receipts | None,
    reconcile_since: float | None = None,
    before_create: Callable[[], None] | None = None,
    *,
    replacing: str | None = None,
) -> Submitted:
    """:func:`submit_job` once the receipt (``earlier``) has been looked up.

    With a receipt store, only the run holding the request's claim pays (see
    :mod:`..storage.claims`); any other follows the holder's job once its receipt appears.
    ``replacing``: a job recorded for this request that is gone (the replacement is claimed
    under its own name).
    """
    if earlier is not None and still_usable(client, earlier.video_id):
        logger.info("request already paid for: following %s", earlier.video_id)
        return Submitted(earlier.video_id, reused=True, key=plan.key, receipt=earlier)
    gone = replacing or (earlier.video_id if earlier is not None else None)
    claim: Claim | None = None
    if receipts is not None:
        while True:
            won, claim = receipts.claims.take(plan.key, after=gone)
            if won:
                break
            found = _follow_claim(receipts, plan.key, claim, gone)
            if found is not None and still_usable(client, found.video_id):
                logger.info("another run holds this request's claim: following its job %s", found.video_id)
                return Submitted(found.video_id, reused=True, key=plan.key, receipt=found)
            if found is not None:
                gone = found.video_id  # the holder's job failed too: its replacement is claimed anew
        if claim.took_over_at is not None:
            # The claim's earlier owner died without a receipt: it may have paid after all.
            reconcile_since = min(reconcile_since or claim.took_over_at, claim.took_over_at)
    try:
        if before_create is not None:
            before_create()
        video = send_job(plan, reconcile_since)
    except BaseException:
        # No job recorded (none made, or one whose answer could not be used safely): the claim
        # goes, so the next run may pay at once rather than wait for a claim nobody fulfils.
        if receipts is not None and claim is not None:
            receipts.claims.release(claim)
        raise
    model, seconds, size = plan.fields or (str(video.model), str(video.seconds), str(video.size))
    receipt = Receipt(plan.key, video.id, client.base_url, model, seconds, size)
    if receipts is not None:
        receipts.record(receipt)
        if claim is not None:
            receipts.claims.fulfil(claim, receipt.to_json())
    return Submitted(
        video.id, reused=False, recreated=gone is not None, key=plan.key, receipt=receipt if receipts else None
    )


# A run that lost a claim waits this long at most for the holder's receipt.
FOLLOW_LIMIT = 2 * STALE_AFTER


def _follow_claim(receipts: Receipts, key: str, claim: Claim, gone: str | None) -> Receipt | None:
    """The receipt the claim's holder writes (a job other than ``gone``), once it appears; None once
    the claim is released or orphaned (the caller then claims again, taking it over)."""
    deadline = time.monotonic() + FOLLOW_LIMIT
    while time.monotonic() < deadline:
        found = receipts.find(key)
        if found is not None and found.video_id != gone:
            return found
        held = receipts.claims.current(claim)
        if held is not None and held.fulfilled is not None:
            # Paid, and the receipt is gone (or not yet visible): the claim keeps it.
            paid = Receipt.from_json(held.fulfilled)
            if paid.video_id != gone and is_safe_id(paid.video_id):
                return paid
        if held is None or held.orphaned(time.time()):
            return None
        time.sleep(FOLLOW_POLL)
    raise TransientError(
        f"another run ({claim.owner.host}, pid {claim.owner.pid}) has held this request's claim for "
        f"{time.time() - claim.created_at:.0f} s without recording a job; try again later"
    )


def still_usable(client: VideosClient, video_id: str) -> bool:
    """A recorded job that is gone, failed or expired is not followed: a new one is made."""
    try:
        video, _ = client.retrieve(video_id)
    except VideoNotReadyError:
        logger.warning("recorded job %s is gone from the server; creating a new one", video_id)
        return False
    if video.status == "failed":
        logger.warning("recorded job %s failed earlier; creating a new one", video_id)
        return False
    if video.expires_at is not None and video.expires_at < time.time():
        logger.warning("recorded job %s has expired; creating a new one", video_id)
        return False
    return True


def wait(
    client: VideosClient,
    video_id: str,
    *,
    max_wait: float,
    poll_interval: float,
    on_progress: ProgressCallback | None = None,
    watcher: JobWatcher | None = None,
) -> Video:
    """Poll until completed; a transient failure that outlasts the SDK's retries resumes polling.

    ``watcher``: the process's shared status reads (a batch), instead of polling this job alone.
    """
    deadline = time.monotonic() + max_wait

    def poll(_: int) -> Video:
        left = max(0.0, deadline - time.monotonic())
        if watcher is not None:
            return watcher.wait(video_id, max_wait=left, on_progress=on_progress)
        return client.wait(video_id, max_wait=left, poll_interval=poll_interval, on_progress=on_progress)

    return retry_transient(poll, what=f"polling {video_id}")


def ensure_collectable(video: Video) -> None:
    """Raise clearly when a job cannot be delivered now: failed, not finished, or expired."""
    if video.status == "failed":
        raise job_error(video)
    if video.status != "completed":
        raise VideoNotReadyError(
            video.id, video.status, f"video {video.id} is {video.status} ({video.progress}%); collect it later"
        )
    if video.expires_at is not None and video.expires_at < time.time():
        expired = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(video.expires_at))
        raise VideoExpiredError(video.id, "expired", f"video {video.id} expired at {expired}")


@dataclass(frozen=True)
class Delivered:
    video_id: str
    uri: str
    bytes: int
    sha256: str
    model: str
    duration: str
    resolution: str
    expires_at: int | None = None
    reused: bool = False
    thumbnail_uri: str | None = None
    # created, resumed (an earlier run's job), recreated (the earlier job was gone) or
    # already delivered (nothing asked of the server at all).
    how: str = "created"
    spritesheet_uri: str | None = None
    # The quality check's report (None: not checked), and the jobs a quality retry
    # rejected before this one in this run, with how many of them were paid for now.
    quality: dict[str, Any] | None = None
    rejected: tuple[str, ...] = ()
    rejected_paid: int = 0


def deliver(
    client: VideosClient,
    video: Video,
    output: str,
    *,
    prompt: str | None = None,
    s3: S3Client | None = None,
    previews: bool = False,
    fingerprint: str | None = None,
    quality: QualityPolicy | None = None,
    expected: Expectation | None = None,
) -> Delivered:
    """Download a completed video, check it, and store it at ``output``; the local copy goes once stored.

    ``quality`` (default: ``fail``) decides what a video failing the check does (see
    :mod:`.gate`): under ``fail``/``retry`` it is kept beside the output and
    :class:`VideoQualityError` is raised, nothing reaching ``output``. ``expected``: what
    was asked (default: what the server says the job is). ``previews``: the thumbnail and
    spritesheet go beside it too (see :func:`deliver_previews`).
    """
    downloaded = retry_transient(lambda _: client.download(video.id), what=f"downloading {video.id}")
    model, seconds, size = str(video.model), str(video.seconds), str(video.size)
    prompt_sha256 = hashlib.sha256((prompt or video.prompt or "").encode()).hexdigest()
    destination = resolve_destination(output, video_id=video.id, model=model)
    report = check_download(
        downloaded,
        destination.uri,
        quality or QualityPolicy(),
        expected or Expectation.of(size, seconds),
        s3=s3,
        metadata=object_metadata(video.id, model, seconds, size, prompt_sha256, downloaded.sha256),
    )
    try:
        stored = retry_transient(
            lambda _: store_file(
                downloaded.path,
                destination,
                sha256=downloaded.sha256,
                content_type=downloaded.content_type or "video/mp4",
                metadata=object_metadata(video.id, model, seconds, size, prompt_sha256, downloaded.sha256, fingerprint),
                client=s3,
            ),
            what=f"storing {video.id}",
        )
    except StorageError as error:
        if video.expires_at:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(video.expires_at))
            error.args = (f"{error.args[0]}; `sora-video collect {video.id}` can deliver it until {when}",)
        raise
    Path(downloaded.path).unlink(missing_ok=True)
    shown = deliver_previews(client, video.id, stored.uri, model=model, s3=s3) if previews else {}
    return Delivered(
        video.id,
        stored.uri,
        stored.bytes,
        stored.sha256,
        model,
        seconds,
        size,
        video.expires_at,
        thumbnail_uri=shown.get("thumbnail"),
        spritesheet_uri=shown.get("spritesheet"),
        quality=report.as_dict() if report is not None else None,
    )


PREVIEWS = PREVIEW_VARIANTS  # the names a batch reserves for them: storage's preview_outputs


def deliver_previews(
    client: VideosClient,
    video_id: str,
    video_uri: str,
    *,
    model: str,
    s3: S3Client | None = None,
    warn: Callable[[str], object] = logger.warning,
) -> dict[str, str]:
    """The thumbnail and the spritesheet beside the delivered video at ``video_uri``: variant -> URI.

    ``clip.mp4`` -> ``clip.thumbnail.webp`` and ``clip.spritesheet.jpg`` (the extension
    follows the content type). Best effort: the video is what was paid for, so a preview
    the server does not serve, or that cannot be stored, is skipped with a warning and
    never fails the delivery (``warn`` says why). A server that answers a preview
    request with the MP4 (seen in its first bytes, never stored as an image) is asked
    for no other.
    """
    if not client.profile.supports_variants:
        warn(f"previews skipped: provider {client.profile.name} serves no thumbnail or spritesheet")
        return {}
    stored: dict[str, str] = {}
    for variant in PREVIEWS:
        try:
            stored[variant] = _store_variant(client, video_id, video_uri, variant, model=model, s3=s3)
        except VariantUnavailableError as error:
            warn(f"previews skipped: {error}")
            break  # it ignores the variant: the next request would download the video again
        except (SoraError, OSError) as error:
            warn(f"{variant} of {video_id} skipped: {error}")
    return stored


def _store_variant(
    client: VideosClient, video_id: str, video_uri: str, variant: str, *, model: str, s3: S3Client | None
) -> str:
    downloaded = client.download(video_id, variant="thumbnail" if variant == "thumbnail" else "spritesheet")
    try:
        destination = exact_destination(variant_output(video_uri, variant, downloaded.content_type))
        metadata = {"video-id": video_id, "model": model, "variant": variant}
        stored = retry_transient(
            lambda _: store_file(
                downloaded.path,
                destination,
                sha256=downloaded.sha256,
                content_type=downloaded.content_type,
                metadata=metadata,
                client=s3,
            ),
            what=f"storing the {variant} of {video_id}",
        )
    finally:
        Path(downloaded.path).unlink(missing_ok=True)
    return stored.uri


def collect(
    client: VideosClient,
    video_id: str,
    output: str,
    *,
    s3: S3Client | None = None,
    previews: bool = True,
    quality: QualityPolicy | None = None,
) -> Delivered:
    """Deliver a job that finished, checked like every delivery and its previews beside it;
    raises clearly when it is not finished, failed, expired or fails the quality check
    (``quality``, default ``fail``; a collect never pays, so ``retry`` rejects like ``fail``)."""
    video, _ = client.retrieve(video_id)
    ensure_collectable(video)
    return deliver(client, video, output, s3=s3, previews=previews, quality=quality)


def find_delivered(
    receipts: Receipts | None, key: str, output: str, *, model: str, s3: S3Client | None = None
) -> Delivered | None:
    """The video this request already delivered to ``output``, if it is still there; no API call.

    Two ways to know: the receipt names the delivered object, or ``output`` names one fixed
    place (no ``{video_id}``) that holds an object whose metadata carries this fingerprint.
    """
    return _delivered_at(receipts.find(key) if receipts is not None else None, key, output, model=model, s3=s3)


def fixed_s3_destination(output: str, *, model: str) -> Destination | None:
    """The one S3 object ``output`` names whatever the job (no ``{video_id}``), else None.

    Such an object carries the request's fingerprint in its metadata, so it tells by
    itself whether this request was delivered there.
    """
    fixed = resolve_destination(output, video_id="video_a", model=model)
    if fixed.uri != resolve_destination(output, video_id="video_b", model=model).uri or fixed.path is not None:
        return None
    return fixed


def _delivered_at(
    receipt: Receipt | None,
    key: str,
    output: str,
    *,
    model: str,
    s3: S3Client | None = None,
    outputs: Listing | None = None,
) -> Delivered | None:
    """:func:`find_delivered` once the receipt has been looked up; ``outputs`` lists what was there."""
    if receipt is not None:
        # Delivered *here*: another output (a new path, another day's {date}) gets its own copy.
        here = resolve_destination(output, video_id=receipt.video_id, model=model).uri
        # A batch does not write S3 deliveries back to the receipt (see produce_job): the
        # job's object at this output says by its metadata whether it holds this request.
        unrecorded = receipt.delivered_uri is None and here.startswith("s3://")
        if (receipt.delivered_uri == here or unrecorded) and not (outputs is not None and outputs.rules_out(here)):
            found = stored_object(exact_destination(here), s3)
            if (
                found is not None
                and (unrecorded or found[0] == receipt.delivered_bytes)
                and found[1].get("fingerprint", None if unrecorded else key) == key
            ):
                listed = _listed_previews(here, outputs)
                return Delivered(
                    receipt.video_id,
                    here,
                    found[0],
                    receipt.delivered_sha256 or found[1].get("sha256", ""),
                    receipt.model,
                    receipt.duration,
                    receipt.resolution,
                    receipt.expires_at,
                    reused=True,
                    how="already delivered",
                    thumbnail_uri=receipt.thumbnail_uri or listed.get("thumbnail"),
                    spritesheet_uri=receipt.spritesheet_uri or listed.get("spritesheet"),
                )
    fixed = fixed_s3_destination(output, model=model)
    if fixed is None:
        return None
    if outputs is not None and outputs.rules_out(fixed.uri):
        return None  # nothing was there when the batch listed it
    found = stored_object(fixed, s3)
    if found is None or found[1].get("fingerprint") != key:
        return None
    metadata = found[1]
    listed = _listed_previews(fixed.uri, outputs)
    return Delivered(
        metadata.get("video-id", ""),
        fixed.uri,
        found[0],
        metadata.get("sha256", ""),
        metadata.get("model", model),
        metadata.get("seconds", ""),
        metadata.get("size", ""),
        reused=True,
        how="already delivered",
        thumbnail_uri=listed.get("thumbnail", receipt.thumbnail_uri if receipt else None),
        spritesheet_uri=listed.get("spritesheet", receipt.spritesheet_uri if receipt else None),
    )


def _listed_previews(video_uri: str, outputs: Listing | None) -> dict[str, str]:
    """The previews a listing shows beside ``video_uri``: variant -> URI."""
    if outputs is None:
        return {}
    return {
        variant: uri
        for variant in PREVIEWS
        for content_type in PREVIEW_EXTENSIONS
        if (uri := variant_output(video_uri, variant, content_type)) in outputs
    }


class StoredResult(Protocol):
    """What a delivery returns, in the core (``Delivered``) or the flows (``VideoResult``)."""

    @property
    def uri(self) -> str: ...
    @property
    def bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def expires_at(self) -> int | None: ...
    @property
    def thumbnail_uri(self) -> str | None: ...
    @property
    def spritesheet_uri(self) -> str | None: ...


def record_delivery(
    receipts: Receipts | None, key: str, delivered: StoredResult, *, receipt: Receipt | None = None
) -> None:
    """Complete the receipt (``receipt``, else the one stored): a rerun anywhere then knows the video is delivered."""
    if receipts is None:
        return
    receipt = receipt if receipt is not None and receipt.key == key else receipts.find(key)
    if receipt is not None:
        receipts.record(
            replace(
                receipt,
                delivered_uri=delivered.uri,
                delivered_bytes=delivered.bytes,
                delivered_sha256=delivered.sha256,
                expires_at=delivered.expires_at,
                thumbnail_uri=delivered.thumbnail_uri,
                spritesheet_uri=delivered.spritesheet_uri,
            )
        )


def produce(
    client: VideosClient,
    request: JobRequest,
    output: str,
    *,
    image: PreparedImage | None = None,
    request_id: str | None = None,
    receipts: Receipts | None = None,
    max_wait: float,
    poll_interval: float,
    on_progress: ProgressCallback | None = None,
    on_submitted: Callable[[Submitted], None] | None = None,
    previews: bool = True,
    s3: S3Client | None = None,
    rendering: Callable[[], AbstractContextManager[object]] = nullcontext,
    before_create: Callable[[], None] | None = None,
    reconcile_since: float | None = None,
    outputs: Listing | None = None,
    watcher: JobWatcher | None = None,
    admitted: Callable[[], AbstractContextManager[object]] | None = None,
    quality: QualityPolicy | None = None,
    on_rejected: Callable[[VideoQualityError, int], None] | None = None,
) -> Delivered:
    """The video for ``request`` (a create, remix, edit or extension) at ``output``, paying only
    for what no earlier run did.

    Already delivered: returned with no API call. Paid for but not delivered: that job is
    followed. Otherwise one job is created. ``rendering()`` is held from right before the
    create until the job stops rendering (a concurrency slot); ``before_create`` runs
    right before a paid create (a rate limit). ``outputs``: a listing of what existed at
    the destination (a batch's), so a missing output is not looked up. ``previews``: the
    thumbnail and spritesheet are delivered beside the video (where the server has them).
    ``watcher``: the process's shared status reads (see :mod:`.watcher`). ``admitted()``:
    a queue in this process (a batch's ``max_in_flight``), held around ``rendering()``.

    The receipt is read before the create: before anything is held, or with ``admitted``
    once let in; read again once ``rendering()`` is held if getting it took long. What is
    recorded after it is this run's own.

    ``quality`` (default ``fail``): a finished video that fails the check is kept beside
    ``output`` and raises :class:`VideoQualityError`; under ``retry=N`` up to N more jobs
    are made, retry k as the request with :func:`.gate.retry_request_id` (its own receipt:
    a rerun follows it), until one passes. ``on_rejected(error, retries_left)`` hears of each
    rejection (default: a warning).
    """
    policy = quality or QualityPolicy()
    plans: dict[str | None, JobPlan] = {}

    def plan(attempt_id: str | None) -> JobPlan:
        if attempt_id not in plans:
            plans[attempt_id] = plan_job(client, request, image, attempt_id)
        return plans[attempt_id]

    def make(attempt: int, attempt_id: str | None, rejected: list[VideoQualityError]) -> Delivered:
        delivered = produce_job(
            client,
            plan(attempt_id),
            output,
            receipts=receipts,
            max_wait=max_wait,
            poll_interval=poll_interval,
            on_progress=on_progress,
            on_submitted=on_submitted,
            previews=previews,
            s3=s3,
            rendering=rendering,
            before_create=before_create,
            reconcile_since=reconcile_since if attempt == 0 else None,
            outputs=outputs,
            watcher=watcher,
            admitted=admitted,
            quality=policy,
        )
        paid = sum(1 for error in rejected if error.how in ("created", "recreated"))
        return replace(delivered, rejected=tuple(error.video_id for error in rejected), rejected_paid=paid)

    return through_quality_retries(
        policy,
        request_id,
        earlier=lambda attempt_id: receipts.find(plan(attempt_id).key) if receipts is not None else None,
        make=make,
        on_rejected=on_rejected,
    )


def produce_job(
    client: VideosClient,
    plan: JobPlan,
    output: str,
    *,
    receipts: Receipts | None = None,
    max_wait: float,
    poll_interval: float,
    on_progress: ProgressCallback | None = None,
    on_submitted: Callable[[Submitted], None] | None = None,
    previews: bool = True,
    s3: S3Client | None = None,
    rendering: Callable[[], AbstractContextManager[object]] = nullcontext,
    before_create: Callable[[], None] | None = None,
    reconcile_since: float | None = None,
    outputs: Listing | None = None,
    watcher: JobWatcher | None = None,
    admitted: Callable[[], AbstractContextManager[object]] | None = None,
    quality: QualityPolicy | None = None,
) -> Delivered:
    """:func:`produce` for any kind of job (``plan``: a create, remix, edit or extension), one job:
    a video failing the quality check is recorded rejected in its receipt and raised."""
    key = plan.key
    # Queued in this process first (``admitted``, a batch): the receipt is read once the row
    # is let in, not before. Meanwhile a fixed S3 output still tells by itself (listing,
    # then the object's fingerprint) whether this request was delivered there.
    earlier = receipts.find(key) if receipts is not None and admitted is None else None
    model = plan.model or (earlier.model if earlier is not None else "") or "unknown"
    done = _delivered_at(earlier, key, output, model=model, s3=s3, outputs=outputs)
    if done is not None:
        logger.info("already delivered: %s (video %s)", done.uri, done.video_id)
        return done
    with admitted() if admitted is not None else nullcontext():
        if admitted is not None and receipts is not None:
            earlier = receipts.find(key)
            if earlier is not None and (
                done := _delivered_at(earlier, key, output, model=model, s3=s3, outputs=outputs)
            ):
                logger.info("already delivered: %s (video %s)", done.uri, done.video_id)
                return done
        entering = time.monotonic()
        with rendering():
            if earlier is None and receipts is not None and time.monotonic() - entering > RECHECK_AFTER_WAIT:
                # Read again once the slot is held, right before paying: the wait for it was
                # long enough for another run of this row (a shard orphaned by a killed
                # parent) to have paid meanwhile, or even delivered.
                earlier = receipts.find(key)
                if earlier is not None and (done := _delivered_at(earlier, key, output, model=model, s3=s3)):
                    logger.info("already delivered: %s (video %s)", done.uri, done.video_id)
                    return done
            submitted = _submit(client, plan, earlier, receipts, reconcile_since, before_create)
            if on_submitted is not None:
                on_submitted(submitted)

            def follow(video_id: str) -> Video:
                return wait(
                    client,
                    video_id,
                    max_wait=max_wait,
                    poll_interval=poll_interval,
                    on_progress=on_progress,
                    watcher=watcher,
                )

            try:
                video = follow(submitted.video_id)
            except VideoNotReadyError as error:
                if error.status != "not_found" or not submitted.reused:
                    raise
                # Gone between the receipt check and the first poll (a server reset): pay once more.
                logger.warning("video %s vanished from the server; creating a new one", submitted.video_id)
                if receipts is not None:
                    receipts.forget(key)
                submitted = replace(_submit(client, plan, None, receipts, replacing=submitted.video_id), recreated=True)
                video = follow(submitted.video_id)
    try:
        delivered = deliver(
            client,
            video,
            output,
            prompt=plan.prompt,
            s3=s3,
            previews=previews,
            fingerprint=key,
            quality=quality,
            expected=plan.expectation(video),
        )
    except VideoQualityError as error:
        error.how = submitted.how
        record_rejection(receipts, key, error, receipt=submitted.receipt)
        raise
    delivered = replace(delivered, reused=submitted.reused, how=submitted.how)
    if outputs is None or not delivered.uri.startswith("s3://"):
        # A batch's S3 object needs no record: its metadata carries the fingerprint, the
        # receipt names the job and so the object, and the batch's listing shows the
        # previews beside it. Elsewhere the receipt also remembers the previews.
        record_delivery(receipts, key, delivered, receipt=submitted.receipt)
    return delivered
