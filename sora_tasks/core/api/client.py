"""The Videos API client: one create, patient polling, streamed downloads.

Built on the official SDK. Two rules shape it:
- reads (retrieve, list, content) use the SDK's retries, which honour
  ``Retry-After``; a create is sent once (``max_retries=0``), because a re-sent
  create is a second paid job. An ambiguous create failure (5xx, dropped
  connection) is reconciled against the server's job list before anyone retries.
- whatever happens after a create carries the video id.
Remix, edit, extend and characters follow the same rules; they live in
:mod:`.operations`, mixed into :class:`VideosClient`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import httpx2
import openai
from openai import DefaultHttpxClient, OpenAI
from openai.types import Video

from ..errors import (
    ConfigurationError,
    DownloadError,
    InvalidRequestError,
    ModerationBlockedError,
    TransientError,
    VariantUnavailableError,
    VideoExpiredError,
    VideoJobError,
    VideoNotReadyError,
    VideoTimeoutError,
)
from ..ids import ID_RULE, is_safe_id, path_component
from ..media.containers import mp4_problem
from ..media.images import PreparedImage
from ..text import shown
from .answers import status_error as _status_error
from .endpoints import DEFAULT_MAX_WAIT, DEFAULT_POLL_INTERVAL, resolve_base_url
from .operations import RECONCILE_ATTEMPTS, RECONCILE_DELAY, RECONCILE_WINDOW, Expected, VideoOperations
from .providers import ProviderProfile, resolve_profile
from .references import check_id, check_image_url
from .request import VideoRequest

logger = logging.getLogger("sora_tasks")

__all__ = ["RECONCILE_ATTEMPTS", "RECONCILE_DELAY", "RECONCILE_WINDOW", "DownloadedFile", "VideosClient"]

DOWNLOAD_CHUNK = 1024 * 1024
# The largest video a download takes (a 20 s sora-2-pro video is tens of MB; 4 GiB leaves
# room for any real one while a server streaming without end is stopped). Previews are
# small images: a server answering a thumbnail with hundreds of MB is stopped much earlier.
DEFAULT_MAX_DOWNLOAD_MB = 4096.0
MAX_PREVIEW_BYTES = 64 * 1024 * 1024
Variant = Literal["video", "thumbnail", "spritesheet"]
ProgressCallback = Callable[[Video], None]

# The SDK warns on every videos call; one notice per process (below) is enough.
warnings.filterwarnings("ignore", message="The Sora API is scheduled", category=DeprecationWarning)
_deprecation_noted = False

_SIGNATURES: dict[str, tuple[tuple[int, bytes], ...]] = {
    "video": ((4, b"ftyp"),),
    "thumbnail": ((0, b"\xff\xd8\xff"), (8, b"WEBP"), (0, b"\x89PNG")),
    "spritesheet": ((0, b"\xff\xd8\xff"), (8, b"WEBP"), (0, b"\x89PNG")),
}


@dataclass(frozen=True)
class DownloadedFile:
    video_id: str
    variant: str
    path: Path
    bytes: int
    sha256: str
    content_type: str


def _note_hosted_deprecation(base_url: str) -> None:
    global _deprecation_noted
    if not _deprecation_noted and urlparse(base_url).hostname == "api.openai.com":
        _deprecation_noted = True
        logger.warning(
            "OpenAI scheduled the hosted Sora API to shut down on 2026-09-24; set base_url to a "
            "compatible /v1/videos server (LiteLLM, vLLM-Omni, SGLang) if api.openai.com refuses."
        )


def resolve_api_key(api_key: str | None) -> str:
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key or not key.strip():
        raise ConfigurationError(
            "no API key: set OPENAI_API_KEY, pass api_key, or use a VideosApi block (api=...) that holds one"
        )
    return key.strip()


def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client in the process (thread-safe once built).

    Building one loads the CA bundle: ~16 ms of CPU, which each of a batch's
    threads paid as it started, all at once, while the first creates waited.
    It honours SSL_CERT_FILE / SSL_CERT_DIR as the SDK's own default does, read once.
    """
    global _shared_tls
    with _shared_tls_lock:  # not functools.cache: twenty threads would all build one
        if _shared_tls is None:
            _shared_tls = httpx2.create_ssl_context()
        return _shared_tls


_shared_tls: ssl.SSLContext | None = None
_shared_tls_lock = threading.Lock()


class VideosClient(VideoOperations):
    """A thin, typed wrapper over ``OpenAI().videos`` with our reliability rules.

    The API key is held privately and never appears in ``repr``, logs or errors.
    Beyond create: ``remix``, ``edit``, ``extend``, ``create_character`` and
    ``get_character`` (see :class:`~.operations.VideoOperations`).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 3,
        timeout: float = 60.0,
        provider: str | ProviderProfile | None = None,
        max_download_mb: float = DEFAULT_MAX_DOWNLOAD_MB,
    ) -> None:
        if not max_download_mb > 0:
            raise InvalidRequestError(
                f"max_download_mb must be a positive number of megabytes, got {max_download_mb!r}"
            )
        self.max_download_bytes = int(max_download_mb * 1024 * 1024)
        self.base_url = resolve_base_url(base_url)
        self.profile = provider if isinstance(provider, ProviderProfile) else resolve_profile(provider, self.base_url)
        key = resolve_api_key(api_key)
        _note_hosted_deprecation(self.base_url)
        self._reads = OpenAI(
            api_key=key,
            base_url=self.base_url,
            max_retries=max_retries,
            timeout=timeout,
            http_client=DefaultHttpxClient(verify=_tls_context()),
        )
        self._writes = self._reads.with_options(max_retries=0)

    def __repr__(self) -> str:
        return f"VideosClient(base_url={self.base_url!r}, provider={self.profile.name!r})"

    def close(self) -> None:
        self._reads.close()

    # -- create -----------------------------------------------------------------

    def create(
        self,
        request: VideoRequest,
        image: PreparedImage | None = None,
        *,
        image_url: str | None = None,
        file_id: str | None = None,
        rate_limit_attempts: int = 3,
        reconcile_since: float | None = None,
        **extra_body: Any,
    ) -> Video:
        """Send one create. Raises :class:`TransientError` only when no job was made.

        The reference image is at most one of: ``image`` (uploaded), ``image_url`` (an
        http(s) URL the server fetches, or a ``data:image/...;base64`` URL) or
        ``file_id`` (a file uploaded to the server's ``/v1/files``); the last two are
        sent as a JSON ``input_reference`` object, which the SDK cannot send itself.
        A 429 means the server made nothing, so it is waited out (``Retry-After``)
        and re-sent here, up to ``rate_limit_attempts`` times. A caller retrying an
        earlier, failed attempt passes its start time as ``reconcile_since``: a job
        the server made for that attempt after all is then adopted, not paid again.
        """
        reference = self._reference(image, image_url, file_id)
        params: dict[str, Any] = {
            "prompt": request.prompt,
            "model": request.model,
            "seconds": self.profile.seconds_value(request.seconds),
            "size": request.size,
        }
        extra_body = {**request.extra, **extra_body}
        if image is not None:
            params["input_reference"] = image.as_upload()

        def send() -> Video:
            if reference is not None:
                body = {**params, **extra_body, "input_reference": reference}
                return self._writes.post("/videos", body=body, cast_to=Video)
            return self._writes.videos.create(**params, extra_body=extra_body or None)

        return self._send_job(
            "create",
            send,
            _expected(request),
            rate_limit_attempts=rate_limit_attempts,
            reconcile_since=reconcile_since,
        )

    def _reference(
        self, image: PreparedImage | None, image_url: str | None, file_id: str | None
    ) -> dict[str, str] | None:
        """The create's JSON ``input_reference`` object, checked (and the provider asked) before any request."""
        if sum(given is not None for given in (image, image_url, file_id)) > 1:
            raise InvalidRequestError("give at most one reference image: image, image_url or file_id")
        if image_url is not None:
            self.profile.require("image_url")
            return {"image_url": check_image_url(image_url)}
        if file_id is not None:
            self.profile.require("file_id")
            return {"file_id": check_id(file_id, "file_id", "an id such as file-abc123")}
        return None

    def find_created(self, request: VideoRequest, *, since: float, attempts: int = 1) -> Video | None:
        """After an ambiguous create, look for the job the server may have made anyway."""
        return self._find(_expected(request), since=since, attempts=attempts, what="create")

    # -- status -----------------------------------------------------------------

    def retrieve(self, video_id: str) -> tuple[Video, float | None]:
        """The job and the server's poll-after hint in seconds (None when absent)."""
        if not is_safe_id(video_id):
            raise InvalidRequestError(f"video_id must be a server's video id ({ID_RULE}), got {shown(video_id)}")
        try:
            raw = self._reads.videos.with_raw_response.retrieve(video_id)
        except openai.NotFoundError as error:
            raise VideoNotReadyError(video_id, "not_found", f"video {video_id} does not exist on the server") from error
        except openai.APIStatusError as error:
            raise _status_error(error, video_id) from error
        except openai.APIConnectionError as error:
            raise TransientError(f"cannot reach {self.base_url}: {error}", video_id=video_id) from error
        hint = raw.headers.get("openai-poll-after-ms")
        video = raw.parse()
        if video.id != video_id:
            # Proxies (LiteLLM) answer with a shorter id that no longer routes; the id
            # we asked with is the one that works, so it is the one everyone sees.
            video = video.model_copy(update={"id": video_id})
        self._check_answer(video, "status read")
        return video, (int(hint) / 1000 if hint and hint.isdigit() else None)

    def list_recent(
        self, *, after: str | None = None, limit: int = 100, wanted: Callable[[Mapping[str, Any]], bool] | None = None
    ) -> tuple[list[Video], str | None, float | None]:
        """One page of the server's jobs, newest first: the jobs (those ``wanted`` says yes to, if
        given), the id to page on from (None on the last page) and the poll-after hint in seconds.

        Read with the SDK's retries; a failure that outlasts them is a :class:`TransientError`.
        The page is read as plain JSON and only the wanted jobs are built: building every
        job of a long page costs more than the request itself.
        """
        try:
            raw = self._reads.videos.with_raw_response.list(limit=limit, order="desc", after=after or openai.omit)
        except openai.APIStatusError as error:
            raise _status_error(error, None) from error
        except openai.APIConnectionError as error:
            raise TransientError(f"cannot reach {self.base_url}: {error}") from error
        hint = raw.headers.get("openai-poll-after-ms")
        body = raw.http_response.json()
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise TransientError(f"unexpected job list from {self.base_url}: {str(body)[:200]}")
        last = items[-1].get("id") if items and isinstance(items[-1], dict) else None
        following = last if body.get("has_more") and isinstance(last, str) else None
        videos = [
            Video.construct(**item)
            for item in items
            # A job whose id breaks the rule is no job of ours: nothing could follow it safely.
            if isinstance(item, dict) and is_safe_id(item.get("id")) and (wanted is None or wanted(item))
        ]
        return videos, following, (int(hint) / 1000 if hint and hint.isdigit() else None)

    def wait(
        self,
        video_id: str,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        on_progress: ProgressCallback | None = None,
    ) -> Video:
        """Poll until completed; the server's ``openai-poll-after-ms`` wins over ``poll_interval``.

        Polls keep a fixed rate: the interval runs from one poll's start to the next.
        Sleeping the full interval after each answer would add every answer's time
        (and, in a busy process, the wait for the GIL) to every interval, and a job
        finishing at 2 s with a 250 ms hint would be seen tens of milliseconds late.
        """
        started = time.monotonic()
        while True:
            polled = time.monotonic()
            video, hint = self.retrieve(video_id)
            if (done := settled(video, on_progress)) is not None:
                return done
            delay = hint if hint is not None else poll_interval
            now = time.monotonic()
            if polled + delay - started > max_wait:
                raise VideoTimeoutError(video_id, now - started, video.status, video.progress)
            time.sleep(max(0.0, polled + delay - now))

    # -- content ----------------------------------------------------------------

    def download(
        self,
        video_id: str,
        *,
        variant: Variant = "video",
        directory: Path | None = None,
        attempts: int = 3,
    ) -> DownloadedFile:
        """Stream one asset to a temporary file, in chunks, checking size and type.

        A cut-off body is fetched again (up to ``attempts`` times); the SDK itself
        retries 429/5xx answers before the body starts.
        """
        if variant != "video" and not self.profile.supports_variants:
            raise VariantUnavailableError(
                video_id, variant, f"provider {self.profile.name} does not serve the {variant} variant"
            )
        last_error: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                return self._download_once(video_id, variant, directory)
            except TransientError as error:
                last_error = error
                logger.warning("download of %s (%s) attempt %d failed: %s", video_id, variant, attempt, error)
        raise DownloadError(video_id, f"{variant} download failed after {attempts} attempts: {last_error}")

    def _download_once(self, video_id: str, variant: Variant, directory: Path | None) -> DownloadedFile:
        suffix = {"video": ".mp4", "thumbnail": ".img", "spritesheet": ".jpg"}[variant]
        # delete=False: the file outlives this call (it is handed to the upload step).
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the `with` below
            prefix=f"{path_component(video_id)}-", suffix=suffix, dir=directory, delete=False
        )
        path = Path(handle.name)
        digest, size, head = hashlib.sha256(), 0, b""
        cap = self.max_download_bytes if variant == "video" else min(self.max_download_bytes, MAX_PREVIEW_BYTES)
        try:
            with handle, self._content(video_id, variant) as response:
                expected = response.headers.get("content-length")
                content_type = response.headers.get("content-type", "")
                if expected is not None and expected.isdigit() and int(expected) > cap:
                    raise DownloadError(video_id, f"the {variant} is {int(expected)} bytes, more than {_cap(cap)}")
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                    if size + len(chunk) > cap:
                        raise DownloadError(video_id, f"the {variant} is more than {_cap(cap)}: download stopped")
                    if variant != "video" and len(head) < SIGNATURE_BYTES:
                        head += chunk[: SIGNATURE_BYTES - len(head)]
                        if len(head) == SIGNATURE_BYTES and _looks_like(head, "video"):
                            # A server that ignores the variant sends the whole MP4: stop at its first bytes.
                            raise VariantUnavailableError(
                                video_id,
                                variant,
                                f"the server answered the {variant} request with a video ({content_type})",
                            )
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                # Content-Length counts the bytes on the wire: compressed ones when a
                # proxy gzips the body (LiteLLM does), so compare it with those.
                on_wire = response.http_response.num_bytes_downloaded
        except httpx2.TransportError as error:
            path.unlink(missing_ok=True)
            raise TransientError(f"connection dropped after {size} bytes: {error}", video_id=video_id) from error
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if expected is not None and int(expected) != on_wire:
            path.unlink(missing_ok=True)
            raise TransientError(f"got {on_wire} of {expected} bytes", video_id=video_id)
        if variant == "video" and (problem := mp4_problem(path)) is not None:
            path.unlink(missing_ok=True)
            raise DownloadError(video_id, f"the server's video is not a valid MP4: {problem}")
        if variant != "video" and not _has_signature(path, variant):
            got_video = content_type.startswith("video/") or _has_signature(path, "video")
            path.unlink(missing_ok=True)
            if got_video:
                raise VariantUnavailableError(
                    video_id, variant, f"the server answered the {variant} request with a video ({content_type})"
                )
            raise DownloadError(
                video_id, f"the {variant} content ({content_type or 'no type'}) is not a valid {variant}"
            )
        return DownloadedFile(video_id, variant, path, size, digest.hexdigest(), content_type)

    @contextmanager
    def _content(self, video_id: str, variant: Variant) -> Iterator[Any]:
        try:
            with self._reads.videos.with_streaming_response.download_content(video_id, variant=variant) as response:
                yield response
        except openai.NotFoundError as error:
            raise VideoExpiredError(
                video_id, "expired", f"video {video_id} has no downloadable {variant}: {error.message}"
            ) from error
        except openai.BadRequestError as error:
            raise VideoNotReadyError(
                video_id, "not_ready", f"video {video_id} is not downloadable yet: {error.message}"
            ) from error
        except openai.APIStatusError as error:
            raise _status_error(error, video_id) from error
        except openai.APIConnectionError as error:
            raise TransientError(f"cannot reach {self.base_url}: {error}", video_id=video_id) from error

    def delete(self, video_id: str) -> bool:
        """Delete a job's assets; False (with a warning) where the server cannot."""
        if not self.profile.supports_delete:
            logger.warning("provider %s cannot delete videos; %s is left to expire", self.profile.name, video_id)
            return False
        try:
            return bool(self._reads.videos.delete(video_id).deleted)
        except openai.APIStatusError as error:
            logger.warning("could not delete %s: HTTP %s", video_id, error.status_code)
            return False


def _cap(limit: int) -> str:
    return f"the {limit / 1024 / 1024:.0f} MB cap (max_download_mb)"


def _expected(request: VideoRequest) -> Expected:
    return Expected(request.prompt, model=request.model, size=request.size, seconds=request.seconds)


def status_dict(video: Video) -> dict[str, Any]:
    """The seed's status record: status, id, progress, error (its message), plus code and expiry."""
    return {
        "status": video.status,
        "id": video.id,
        "progress": video.progress,
        "error": video.error.message if video.error else None,
        "error_code": video.error.code if video.error else None,
        "model": video.model,
        "duration": int(video.seconds) if str(video.seconds).isdigit() else video.seconds,
        "resolution": video.size,
        "created_at": video.created_at,
        "completed_at": video.completed_at,
        "expires_at": video.expires_at,
    }


def settled(video: Video, on_progress: ProgressCallback | None = None) -> Video | None:
    """One status read handled: progress reported; the video once completed, ``job_error`` once failed, else None."""
    if on_progress is not None:
        on_progress(video)
    if video.status == "completed":
        return video
    if video.status == "failed":
        raise job_error(video)
    return None


def job_error(video: Video) -> VideoJobError:
    code = video.error.code if video.error else "unknown"
    message = video.error.message if video.error else "the job failed without an error message"
    cls = ModerationBlockedError if code == "moderation_blocked" else VideoJobError
    return cls(video.id, code, message)


SIGNATURE_BYTES = 16


def _looks_like(head: bytes, variant: str) -> bool:
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _SIGNATURES[variant])


def _has_signature(path: Path, variant: str) -> bool:
    with path.open("rb") as handle:
        return _looks_like(handle.read(SIGNATURE_BYTES), variant)
