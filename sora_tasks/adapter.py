"""`SoraVideoAdapter`: the seed's Python API, on the same core as the Prefect tasks.

Sync, async-with-callbacks and manual modes, with the seed's signatures, return
types and exceptions (``ValueError``, ``TimeoutError``, ``RuntimeError``). What it
does differently from the seed's original, on purpose:

- status and download use the API's real fields (there is no ``url``);
- an exception raised by ``on_complete`` is logged as a callback error, not
  reported to ``on_error`` as a generation failure;
- with no ``on_error``, a failure is logged and kept on the returned job, and
  :meth:`SoraVideoAdapter.wait_all` raises it: nothing is swallowed;
- async methods return a :class:`VideoJob` — a ``str`` (the video id, as the seed
  promises) that can also be waited on; the worker threads are not daemons, so
  the interpreter runs pending callbacks before it exits;
- timeouts and failures name the video id;
- a finished video is checked before its bytes are returned (``quality``: ``fail``,
  the default, raises :class:`VideoQualityError`, a ``RuntimeError``, for an all-black,
  frozen, short or wrongly sized video, the file kept in the temporary folder it was
  downloaded to; ``warn`` returns it with a warning; ``off`` does not look; the adapter
  keeps no receipts, so ``retry=N`` rejects like ``fail``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from openai.types import Video
from PIL import Image
from pydantic import SecretStr

from .core.api.client import job_error, status_dict
from .core.api.request import VideoRequest
from .core.api.settings import ApiSettings
from .core.errors import InvalidRequestError, VideoNotReadyError
from .core.jobs.derived import DerivedRequest
from .core.jobs.gate import check_download
from .core.jobs.pipeline import plan_job, send_job
from .core.media.images import Fit, prepare_image
from .core.media.quality import Expectation, normalize_quality
from .core.spec import VideoSpec, build_request

logger = logging.getLogger("sora_tasks.adapter")

ImageInput = str | Path | bytes | IO[bytes] | Image.Image
CompleteCallback = Callable[[bytes], None]
ErrorCallback = Callable[[str], None]
ProgressCallback = Callable[[dict[str, Any]], None]


class VideoJob(str):
    """The video id (a ``str``, as the seed returns) plus a handle on the background work."""

    _future: Future[bytes]
    _handled: bool

    def __new__(cls, video_id: str, future: Future[bytes], handled: bool) -> VideoJob:
        job = super().__new__(cls, video_id)
        job._future, job._handled = future, handled
        return job

    @property
    def video_id(self) -> str:
        return str(self)

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> bytes:
        """The video bytes; raises the generation error if it failed."""
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout)


class SoraVideoAdapter:
    """Generate Sora videos from Python: text-to-video and image-to-video."""

    def __init__(
        self,
        api_key: str | None = None,
        model_version: str = "sora-2",
        polling_interval: int | float = 5,
        max_polling_time: int | float = 300,
        base_url: str | None = None,
        max_workers: int = 8,
        provider: str | None = None,
        extra_fields: dict[str, Any] | None = None,
        quality: str = "fail",
    ) -> None:
        """``provider`` names the server kind (``sora-video providers``; "auto" asks it);
        ``extra_fields`` are create fields it accepts (e.g. ``{"seed": 7}``), sent with every job;
        ``quality`` what a video failing the quality check does (fail, warn, off)."""
        # The same settings object the flows and the CLI build, from the seed's arguments.
        self.settings = ApiSettings(
            base_url=base_url,
            api_key=SecretStr(api_key) if api_key else None,
            provider=provider,
            model=model_version,
            poll_interval=float(polling_interval),
            max_wait=float(max_polling_time),
            quality=normalize_quality(quality),
        )
        self._client = self.settings.new_client()
        self.extra_fields = dict(extra_fields or {})
        # Validate the model and extra fields now, as the seed validates the model.
        build_request(VideoSpec(prompt="check", extra_fields=self.extra_fields), self.settings)
        self.model_version = model_version
        self.polling_interval = float(polling_interval)
        self.max_polling_time = float(max_polling_time)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sora-adapter")
        self._jobs: list[VideoJob] = []
        self._lock = threading.Lock()

    # -- the seed's methods -------------------------------------------------------

    def generate_text_to_video(
        self, prompt: str, duration: int = 4, resolution: str = "1280x720", wait: bool = True
    ) -> bytes | str:
        video_id = self._submit(prompt, duration, resolution)
        return self._wait_and_download(video_id) if wait else video_id

    def generate_image_to_video(
        self,
        image: ImageInput,
        prompt: str,
        duration: int = 4,
        resolution: str = "1280x720",
        wait: bool = True,
        fit: Fit = "cover",
    ) -> bytes | str:
        video_id = self._submit(prompt, duration, resolution, image, fit)
        return self._wait_and_download(video_id) if wait else video_id

    def generate_text_to_video_async(
        self,
        prompt: str,
        duration: int = 4,
        resolution: str = "1280x720",
        on_complete: CompleteCallback | None = None,
        on_error: ErrorCallback | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> VideoJob:
        video_id = self._submit(prompt, duration, resolution)
        return self._follow(video_id, on_complete, on_error, on_progress)

    def generate_image_to_video_async(
        self,
        image: ImageInput,
        prompt: str,
        duration: int = 4,
        resolution: str = "1280x720",
        on_complete: CompleteCallback | None = None,
        on_error: ErrorCallback | None = None,
        on_progress: ProgressCallback | None = None,
        fit: Fit = "cover",
    ) -> VideoJob:
        video_id = self._submit(prompt, duration, resolution, image, fit)
        return self._follow(video_id, on_complete, on_error, on_progress)

    def get_video_status(self, video_id: str) -> dict[str, Any]:
        """``{"status", "id", "progress", "error", ...}``; ``error`` is the message or None."""
        video, _ = self._client.retrieve(video_id)
        return status_dict(video)

    def download_video(self, video_id: str) -> bytes:
        """The MP4 of a completed video; ``RuntimeError`` when it is not completed."""
        video, _ = self._client.retrieve(video_id)
        if video.status == "failed":
            raise job_error(video)
        if video.status != "completed":
            raise VideoNotReadyError(video_id, video.status)
        return self._download_bytes(video)

    # -- beyond the seed: videos made from videos ---------------------------------

    def remix_video(self, video_id: str, prompt: str, wait: bool = True) -> bytes | str:
        """A new video from the finished video ``video_id`` and a new prompt (same size and length).

        Bytes of the MP4 like the seed's sync methods, or with ``wait=False`` the new
        video's id. ``ValueError`` before anything is sent for bad input or a server that
        does not remix; errors after the job exists carry its id.
        """
        request = DerivedRequest.build("remix", prompt, video_id)
        request.check(self.settings.profile)
        new_id = send_job(plan_job(self._client, request)).id
        return self._wait_and_download(new_id) if wait else new_id

    def extend_video(
        self,
        video_id_or_path: str | Path,
        prompt: str,
        duration: int | str | None = None,
        wait: bool = True,
        *,
        seconds: int | str | None = None,
    ) -> bytes | str:
        """``video_id_or_path`` (a finished video's id, or a local MP4) followed by a new segment of
        ``duration`` seconds (4, 8, 12, 16 or 20; ``seconds`` is accepted as its other name): one
        video whose length is the sum, as MP4 bytes (or with ``wait=False`` its id)."""
        if duration is not None and seconds is not None and str(duration) != str(seconds):
            raise InvalidRequestError(f"give duration or seconds, not both ({duration!r} and {seconds!r})")
        length = duration if duration is not None else seconds
        if length is None:
            raise InvalidRequestError("duration (the extension's length) is required: one of 4, 8, 12, 16, 20 seconds")
        request = DerivedRequest.build("extend", prompt, video_id_or_path, duration=length)
        request.check(self.settings.profile)
        new_id = send_job(plan_job(self._client, request)).id
        return self._wait_and_download(new_id) if wait else new_id

    # -- waiting for async work ---------------------------------------------------

    def wait_all(self, timeout: float | None = None) -> list[VideoJob]:
        """Wait for every async job; raises the first failure that had no ``on_error``."""
        with self._lock:
            jobs = list(self._jobs)
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in jobs:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            job.exception(remaining)
        for job in jobs:
            error = job.exception()
            if error is not None and not job._handled:
                raise error
        return jobs

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> SoraVideoAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------

    def _submit(
        self, prompt: str, duration: int | str, resolution: str, image: ImageInput | None = None, fit: Fit = "cover"
    ) -> str:
        """Validate, fit the image, create: everything before the job exists, in one place."""
        spec = VideoSpec(prompt=prompt, duration=duration, resolution=resolution, extra_fields=self.extra_fields)
        request = build_request(spec, self.settings)
        prepared = prepare_image(image, request.size, fit=fit) if image is not None else None
        return self._create(request, prepared)

    def _create(self, request: VideoRequest, image: Any) -> str:
        return send_job(plan_job(self._client, request, image)).id

    def _wait_and_download(self, video_id: str, on_progress: ProgressCallback | None = None) -> bytes:
        video = self._client.wait(
            video_id,
            max_wait=self.max_polling_time,
            poll_interval=self.polling_interval,
            on_progress=(lambda video: on_progress(status_dict(video))) if on_progress else None,
        )
        return self._download_bytes(video)

    def _download_bytes(self, video: Video) -> bytes:
        """The checked MP4's bytes: a video the policy rejects raises, its file kept beside the download."""
        downloaded = self._client.download(video.id)
        try:
            # The adapter has no output: the rejected file stays in the download's own folder.
            check_download(
                downloaded,
                str(downloaded.path),
                self.settings.quality_policy,
                Expectation.of(str(video.size), str(video.seconds)),
            )
            return downloaded.path.read_bytes()
        finally:
            downloaded.path.unlink(missing_ok=True)

    def _follow(
        self,
        video_id: str,
        on_complete: CompleteCallback | None,
        on_error: ErrorCallback | None,
        on_progress: ProgressCallback | None,
    ) -> VideoJob:
        def run() -> bytes:
            try:
                video = self._wait_and_download(video_id, on_progress)
            except Exception as error:
                if on_error is not None:
                    on_error(str(error))
                else:
                    logger.error("video %s failed and no on_error was given: %s", video_id, error)
                raise
            if on_complete is not None:
                try:
                    on_complete(video)
                except Exception:
                    # The video is fine; the caller's code is not. Say so, precisely.
                    logger.exception("on_complete callback for video %s raised", video_id)
            return video

        job = VideoJob(video_id, self._pool.submit(run), handled=on_error is not None)
        with self._lock:
            self._jobs.append(job)
        return job
