"""The quality gate every delivered video passes: checked on the downloaded file, before it is stored.

Under ``fail`` and ``retry=N`` a video that fails the check never reaches the output:
it is kept beside it instead, in the same folder or beside the S3 key (``clip.mp4`` ->
``clip.<video id>.rejected.mp4``; ``{video_id}.mp4`` -> ``<video id>.rejected.mp4``),
since it was paid for, and :class:`VideoQualityError` names the video, the failed checks
with their figures, and that place. ``warn`` delivers it with a
warning; ``off`` does not look. A retry is the same request with the request id
``<request id>#quality-retry-<k>``: a job with its own receipt, so a rerun follows the
retry it already paid for instead of paying again.

Used by the core's delivery (:func:`.pipeline.deliver`) and by the Prefect tasks alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import SoraError, VideoQualityError
from ..media.quality import Expectation, QualityPolicy, QualityReport, inspect_video
from ..storage.destinations import S3Client, StoredVideo, exact_destination, store_file
from ..storage.receipts import Receipt, Receipts
from .retries import retry_transient

if TYPE_CHECKING:
    from ..api.client import DownloadedFile

logger = logging.getLogger("sora_tasks")

RETRY_MARK = "#quality-retry-"


def retry_request_id(request_id: str | None, attempt: int) -> str | None:
    """The request id of quality retry ``attempt`` (0: the request itself): ``<id or ''>#quality-retry-<k>``."""
    return request_id if attempt == 0 else f"{request_id or ''}{RETRY_MARK}{attempt}"


T = TypeVar("T")


def through_quality_retries(
    policy: QualityPolicy,
    request_id: str | None,
    *,
    earlier: Callable[[str | None], Receipt | None],
    make: Callable[[int, str | None, list[VideoQualityError]], T],
    on_rejected: Callable[[VideoQualityError, int], object] | None = None,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
) -> T:
    """``make(attempt, request_id, rejected)`` once, or under ``retry=N`` until a video passes the check.

    Retry k is the request with :func:`retry_request_id` ``k``: a job of its own, so a rerun
    follows it. ``earlier(request_id)`` is that attempt's receipt, if any: a job an earlier
    run rejected is gone past without downloading it again. ``rejected`` holds the
    rejections before this attempt; ``on_rejected(error, retries_left)`` hears of each one
    a retry follows (default: a warning in ``log``). The last rejection is raised, naming the jobs rejected before it.
    """
    rejected: list[VideoQualityError] = []
    for attempt in range(attempts(policy)):
        attempt_id = retry_request_id(request_id, attempt)
        found = earlier(attempt_id) if attempt + 1 < attempts(policy) else None
        if found is not None and found.rejected_codes:
            log.info("video %s was rejected by an earlier run (%s); following its retry", found.video_id,
                     found.rejected_codes)  # fmt: skip
            rejected.append(rejected_earlier(found))
            continue
        try:
            return make(attempt, attempt_id, list(rejected))
        except VideoQualityError as error:
            if attempt + 1 == attempts(policy):
                raise retry_note(error, rejected) from None
            rejected.append(error)
            if on_rejected is not None:
                on_rejected(error, attempts(policy) - attempt - 1)
            else:
                log.warning("%s; paying for quality retry %d of %d (quality=%s)", error, attempt + 1, policy.retries,
                            policy.setting)  # fmt: skip
    raise AssertionError("unreachable")


def rejected_earlier(receipt: Receipt) -> VideoQualityError:
    """The rejection an earlier run recorded in ``receipt``, for a retry that goes straight past it."""
    codes = (receipt.rejected_codes or "quality_check").split(",")
    checks = {code.removeprefix("quality_"): "rejected by an earlier run" for code in codes}
    error = VideoQualityError(receipt.video_id, checks, rejected_uri=receipt.rejected_uri)
    error.how = "resumed"
    return error


def attempts(policy: QualityPolicy) -> int:
    """How many jobs a request may cost under ``policy``: 1, or 1 + N for ``retry=N``."""
    return 1 + policy.retries if policy.mode == "retry" else 1


def rejected_uri(uri: str, video_id: str) -> str:
    """Where a rejected video is kept: beside the output, ``clip.mp4`` -> ``clip.<video id>.rejected.mp4``.

    The video id is left out when the output already names it (a ``{video_id}`` template):
    ``video_123.mp4`` -> ``video_123.rejected.mp4``. Either way two rejected jobs (a retry's
    and the one before it) never overwrite each other.
    """
    name = uri.rsplit("/", 1)[-1]
    suffix = name[name.rfind(".") :] if "." in name.lstrip(".") else ""
    stem = uri[: -len(suffix)] if suffix else uri
    marked = "" if video_id in name else f".{video_id}"
    return f"{stem}{marked}.rejected{suffix or '.mp4'}"


def check_download(
    downloaded: DownloadedFile,
    output_uri: str,
    policy: QualityPolicy,
    expected: Expectation,
    *,
    s3: S3Client | None = None,
    metadata: dict[str, str] | None = None,
    warn: Callable[[str], object] = logger.warning,
) -> QualityReport | None:
    """The downloaded video's report (None under ``off``); raises :class:`VideoQualityError` when
    ``policy`` rejects it, after keeping the file at :func:`rejected_uri` of ``output_uri``.

    The temporary file is removed once kept; a file that could not be kept (the bucket
    went away) is said so in a warning, and the error still names the video, which the
    server keeps until it expires.
    """
    if not policy.checks:
        return None
    report = inspect_video(downloaded.path, expected, policy.thresholds)
    if report.ok:
        return report
    failed = "; ".join(f"{name}: {detail}" for name, detail in report.failures.items())
    if not policy.rejects:
        warn(f"video {downloaded.video_id} failed the quality check ({failed}); delivered anyway (quality=warn)")
        return report
    kept: StoredVideo | None = None
    try:
        kept = keep_rejected(downloaded, output_uri, report, s3=s3, metadata=metadata)
    except (SoraError, OSError) as error:
        warn(f"the rejected video {downloaded.video_id} could not be kept beside {output_uri}: {error}")
    finally:
        Path(downloaded.path).unlink(missing_ok=True)
    raise VideoQualityError(
        downloaded.video_id, report.failures, figures=report.figures, rejected_uri=kept.uri if kept else None
    )


def keep_rejected(
    downloaded: DownloadedFile,
    output_uri: str,
    report: QualityReport,
    *,
    s3: S3Client | None = None,
    metadata: dict[str, str] | None = None,
) -> StoredVideo:
    """Store the rejected file beside the output, marked rejected (never with the request's fingerprint,
    so nothing takes it for a delivery)."""

    destination = exact_destination(rejected_uri(output_uri, downloaded.video_id))
    marked = {key: value for key, value in (metadata or {}).items() if key != "fingerprint"}
    marked.update({"quality": "rejected", "quality-checks": ",".join(report.failures)})
    return retry_transient(
        lambda _: store_file(
            downloaded.path,
            destination,
            sha256=downloaded.sha256,
            content_type=downloaded.content_type or "video/mp4",
            metadata=marked,
            client=s3,
        ),
        what=f"keeping the rejected {downloaded.video_id}",
    )


def record_rejection(
    receipts: Receipts | None, key: str, error: VideoQualityError, *, receipt: Receipt | None = None
) -> None:
    """Mark the job's receipt rejected (where the file is kept, which checks failed): nothing paid is lost."""
    if receipts is None:
        return
    receipt = receipt if receipt is not None and receipt.key == key else receipts.find(key)
    if receipt is None or receipt.video_id != error.video_id:
        return
    codes = ",".join(f"quality_{name}" for name in error.checks)
    receipts.record(replace(receipt, rejected_uri=error.rejected_uri, rejected_codes=codes))


def retry_note(error: VideoQualityError, earlier: list[VideoQualityError]) -> VideoQualityError:
    """The last rejection, its message naming the jobs rejected before it (each paid for, each kept)."""
    if earlier:
        ids = ", ".join(f"{rejected.video_id}" for rejected in earlier)
        error.args = (
            f"{error.args[0]}; after {len(earlier)} quality retr{'y' if len(earlier) == 1 else 'ies'} "
            f"(rejected before it: {ids})",
        )
        error.retried = tuple(rejected.video_id for rejected in earlier)
    return error
