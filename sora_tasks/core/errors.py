"""Exceptions raised by prefect-sora.

Every class derives from both :class:`SoraError` and the builtin the seed's API
promises (``ValueError`` for bad input, ``TimeoutError`` for deadlines,
``RuntimeError`` for failed jobs), so ``except RuntimeError`` keeps working while
new code can catch precisely. Anything that happened after a paid create carries
the ``video_id``, so a caller can always recover the job.
"""

from __future__ import annotations

from typing import Any


class SoraError(Exception):
    """Base class of every error raised by prefect-sora."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the instance's state, not by calling __init__ again: subclasses take
        # other arguments than their message, and errors cross process boundaries (a Dask
        # worker's row, Prefect's result store) with their video id intact.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[SoraError], args: tuple[Any, ...], state: dict[str, Any]) -> SoraError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class InvalidRequestError(SoraError, ValueError):
    """Bad input, found before any request is sent (nothing is paid for)."""


class ConfigurationError(InvalidRequestError):
    """Missing or malformed settings: API key, base URL, credentials."""


class ServerRejectedError(SoraError, ValueError):
    """The server refused the request as invalid (HTTP 400/401/403/422)."""

    def __init__(self, message: str, *, status_code: int | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.param = param


class UntrustedAnswerError(SoraError, RuntimeError):
    """A server's answer that cannot be used safely (an unsafe id, an oversized or fake video).

    Nothing is done with it: no file, key, record or further request is made from it.
    ``server`` is the base URL that answered; ``video_id`` the job's id when that id itself
    is safe (a paid job to collect or delete by hand), else None.
    """

    def __init__(self, message: str, *, server: str, video_id: str | None = None) -> None:
        super().__init__(message)
        self.server = server
        self.video_id = video_id


class UntrustedRecordError(SoraError, ValueError):
    """A ledger record this run will not act on: another server's, an output outside what the
    run was given, a record that does not parse. Nothing is contacted; the record is kept."""


class TransientError(SoraError):
    """A failure worth retrying: rate limit, 5xx, dropped connection, cut-off download."""

    def __init__(
        self,
        message: str,
        *,
        video_id: str | None = None,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.video_id = video_id
        self.retry_after = retry_after
        self.status_code = status_code


class VideoJobError(SoraError, RuntimeError):
    """The job reached ``failed`` on the server; never retried (it would be paid again)."""

    def __init__(self, video_id: str, code: str, message: str) -> None:
        super().__init__(f"video {video_id} failed: {code}: {message}")
        self.video_id = video_id
        self.code = code
        self.message = message


class ModerationBlockedError(VideoJobError):
    """The provider's moderation refused the prompt or the reference image."""


class VideoTimeoutError(SoraError, TimeoutError):
    """The job did not finish within the deadline; it may still complete later."""

    def __init__(self, video_id: str, waited: float, last_status: str, progress: int | None) -> None:
        super().__init__(
            f"video {video_id} not finished after {waited:.0f}s (last status {last_status}, "
            f"progress {progress}%); collect it later with its id"
        )
        self.video_id = video_id
        self.waited = waited
        self.last_status = last_status


class ReviewTimeoutError(SoraError, TimeoutError):
    """Nobody decided on a review's takes before its deadline: nothing was delivered (its takes are deleted)."""


class VideoNotReadyError(SoraError, RuntimeError):
    """Content was asked for a job that is not completed (or no longer has assets)."""

    def __init__(self, video_id: str, status: str, message: str | None = None) -> None:
        super().__init__(message or f"video {video_id} is not ready for download: status is {status}")
        self.video_id = video_id
        self.status = status


class VideoExpiredError(VideoNotReadyError):
    """The job completed but its downloadable assets have expired."""


class DownloadError(SoraError, RuntimeError):
    """The content could not be fetched intact; the job itself is fine."""

    def __init__(self, video_id: str, message: str) -> None:
        super().__init__(f"video {video_id}: {message}")
        self.video_id = video_id


class VariantUnavailableError(DownloadError):
    """The server does not serve this variant (e.g. it answers a thumbnail request with the MP4)."""

    def __init__(self, video_id: str, variant: str, message: str) -> None:
        super().__init__(video_id, message)
        self.variant = variant


class VideoQualityError(SoraError, RuntimeError):
    """A finished video failed the quality check; it was paid for, so it is kept, never delivered as good.

    ``video_id`` is the rejected job; ``checks`` maps each failed check (``black``,
    ``frozen``, ``duration``, ``size``, ...) to what was measured against its limit;
    ``figures`` holds every measured value; ``code`` is ``quality_<first failed check>``;
    ``rejected_uri`` is where the rejected file is kept (None: it could not be kept).
    """

    def __init__(
        self,
        video_id: str,
        checks: dict[str, str],
        *,
        figures: dict[str, Any] | None = None,
        rejected_uri: str | None = None,
    ) -> None:
        self.video_id = video_id
        self.checks = dict(checks)
        self.figures = dict(figures or {})
        self.rejected_uri = rejected_uri
        self.code = f"quality_{next(iter(self.checks), 'check')}"
        # How the rejected job came about (created, resumed, ...), and the jobs a retry
        # policy rejected before it; set by whoever made the job.
        self.how: str | None = None
        self.retried: tuple[str, ...] = ()
        failed = "; ".join(f"{name}: {detail}" for name, detail in self.checks.items())
        kept = f"; the rejected file is kept at {rejected_uri}" if rejected_uri else ""
        super().__init__(f"video {video_id} failed the quality check ({failed}){kept}")


class StorageError(SoraError, RuntimeError):
    """Delivery to the destination failed; ``local_path`` still holds the video."""

    def __init__(self, message: str, *, video_id: str | None = None, local_path: str | None = None) -> None:
        if local_path:
            message = f"{message} (the video is kept at {local_path})"
        super().__init__(message)
        self.video_id = video_id
        self.local_path = local_path


class StoryboardError(SoraError, RuntimeError):
    """A storyboard stopped at one shot; the shots before it are paid for, recorded, and resumed by a rerun.

    ``video_id`` is the failed shot's job, or (when that job was never made) the last
    completed shot's, so the error always names a paid video once one exists;
    ``shot_video_id`` is the failed shot's own job (None if it was never made);
    ``completed`` the ids of the shots finished before it, in order; ``code`` the cause's.
    """

    def __init__(
        self,
        message: str,
        *,
        shot: int,
        shots: int,
        video_id: str | None,
        shot_video_id: str | None = None,
        completed: tuple[str, ...] = (),
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.shot = shot
        self.shots = shots
        self.video_id = video_id
        self.shot_video_id = shot_video_id
        self.completed = completed
        self.code = code


class BatchFailedError(SoraError, RuntimeError):
    """Not every row of a batch was delivered; ``rows`` is the whole per-row outcome table.

    Each row is a dict with at least ``row`` (its number in the manifest), ``status``
    (``delivered``, ``invalid`` or ``failed``) and, unless delivered, ``error``; a failed
    row that was paid for keeps its ``video_id``.
    """

    # Rows named in the message; the rest are counted ("and N more").
    LISTED_ROWS = 3
    REASON_CHARS = 120

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = sorted(rows, key=lambda row: int(row["row"]))
        self.delivered = sum(1 for row in self.rows if row["status"] == "delivered")
        self.invalid = sum(1 for row in self.rows if row["status"] == "invalid")
        self.failed = len(self.rows) - self.delivered - self.invalid
        bad = [row for row in self.rows if row["status"] != "delivered"]
        shown = bad[: self.LISTED_ROWS]
        listed = ", ".join(f"row {row['row']} {row['status']} ({_short_reason(row)})" for row in shown)
        more = f" and {len(bad) - self.LISTED_ROWS} more" if len(bad) > self.LISTED_ROWS else ""
        super().__init__(f"{len(bad)} of {len(self.rows)} rows not delivered: {listed}{more}")

    def __reduce__(self) -> tuple[type[BatchFailedError], tuple[list[dict[str, Any]]]]:
        # Prefect pickles a flow's exception into its result store; rebuild it from the rows.
        return (type(self), (self.rows,))


def _short_reason(row: dict[str, Any]) -> str:
    reason = str(row.get("error") or "no error recorded")
    video_id = row.get("video_id")
    if video_id:
        # Job errors already say "video <id> failed: ..."; name the id once, in full.
        reason = reason.replace(f"video {video_id} failed: ", "").replace(f"video {video_id}: ", "")
    limit = BatchFailedError.REASON_CHARS
    reason = reason if len(reason) <= limit else reason[: limit - 3] + "..."
    return f"video {video_id}, {reason}" if video_id else reason
