"""Exceptions raised by prefect-sora.

Every class derives from both :class:`SoraError` and the builtin the seed's API
promises (``ValueError`` for bad input, ``TimeoutError`` for deadlines,
``RuntimeError`` for failed jobs), so ``except RuntimeError`` keeps working while
new code can catch precisely. Anything that happened after a paid create carries
the ``video_id``, so a caller can always recover the job.
"""

from __future__ import annotations


class SoraError(Exception):
    """Base class of every error raised by prefect-sora."""


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


class StorageError(SoraError, RuntimeError):
    """Delivery to the destination failed; ``local_path`` still holds the video."""

    def __init__(self, message: str, *, video_id: str | None = None, local_path: str | None = None) -> None:
        if local_path:
            message = f"{message} (the video is kept at {local_path})"
        super().__init__(message)
        self.video_id = video_id
        self.local_path = local_path
