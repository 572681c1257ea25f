"""Remix, edit, extend and characters: the Videos API beyond create, with create's guarantees.

Mixed into :class:`~sora_tasks.core.api.client.VideosClient`, which stays the one entry
point. Every request that makes a job (create included) goes through
:meth:`VideoOperations._send_job`:
- it is sent once (the ``_writes`` client has ``max_retries=0``): a re-sent request is
  a second paid job;
- a 429 made nothing, so it is waited out (``Retry-After``) and re-sent;
- an ambiguous failure (5xx, dropped connection) is reconciled against the job list,
  matching prompt, size, seconds, the remix source and the creation time, before
  anything is raised; a caller retrying an earlier attempt passes ``reconcile_since``;
- on OpenAI's hosted API, an answer saying the videos endpoints are gone becomes a
  :class:`ConfigurationError` about the 2026-09-24 shutdown.

Videos given by id are sent as JSON (``{"video": {"id": ...}}``), through the SDK's
generic ``post``: openai-python 3.57's own ``videos.edit`` / ``extend`` (and create's
``input_reference`` objects) force multipart and raise ``RuntimeError: Expected entry
at `video` to be bytes...`` before sending (pinned by
``test_sdk_still_cannot_send_reference_objects``; drop the workaround when it fails).
Local MP4s are uploaded through the SDK's own methods.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import openai
from openai.types import Video, VideoCreateCharacterResponse, VideoGetCharacterResponse, VideoSeconds

from ..errors import ServerRejectedError, TransientError, UntrustedAnswerError
from ..ids import ID_RULE, is_safe_id
from ..text import shown
from .answers import hosted_shutdown_error, status_error
from .providers import ProviderProfile, VideoOperation, is_openai_hosted
from .references import (
    VideoSource,
    check_extension_seconds,
    check_id,
    check_name,
    check_prompt,
    video_source,
)

if TYPE_CHECKING:
    from openai import OpenAI

logger = logging.getLogger("sora_tasks")

# How far back a job may have been created and still count as "the one we just sent".
RECONCILE_WINDOW = 120.0
# After a timeout the server may still be committing the job: look this many times.
RECONCILE_ATTEMPTS = 3
RECONCILE_DELAY = 1.0


# Model names as servers echo them: sora-2, sora-2-pro-2025-10-06, openai/sora-2 (LiteLLM).
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-./:@]{0,127}")


def is_safe_model(model: object) -> bool:
    """A model name that may fill an output's ``{model}`` (its ``/`` becomes ``_`` there)."""
    return isinstance(model, str) and _MODEL.fullmatch(model) is not None and ".." not in model


@dataclass(frozen=True)
class Expected:
    """What the job a request makes looks like in the job list (None: not known, not compared)."""

    prompt: str
    model: str | None = None
    size: str | None = None
    seconds: str | None = None
    remixed_from: str | None = None

    def matches(self, video: Video, since: float) -> bool:
        return (
            video.created_at >= since - RECONCILE_WINDOW
            and video.prompt == self.prompt
            and (self.model is None or video.model == self.model)
            and (self.size is None or video.size == self.size)
            and (self.seconds is None or str(video.seconds) == self.seconds)
            and (self.remixed_from is None or video.remixed_from_video_id == self.remixed_from)
        )


Expectation = Expected | Callable[[], Expected]

# Jobs adopted after an ambiguous request, per server, for the whole process: two requests
# that failed ambiguously at once (two batch rows, each with its own client in its own
# thread) must not both take the one job the server made.
_adopted: dict[str, set[str]] = {}
_adopted_lock = threading.Lock()


def _adopt(base_url: str, video_id: str) -> bool:
    """Take ``video_id`` as the job of an ambiguous request; False if another request here took it."""
    with _adopted_lock:
        taken = _adopted.setdefault(base_url.rstrip("/"), set())
        if video_id in taken:
            return False
        taken.add(video_id)
        return True


class VideoOperations:
    """The job-sending rules and the operations beyond create; ``VideosClient`` provides the state."""

    base_url: str
    profile: ProviderProfile
    _reads: OpenAI
    _writes: OpenAI

    @property
    def hosted_by_openai(self) -> bool:
        """Whether answers are read as OpenAI's hosted API's: the profile says so, or the host is OpenAI's."""
        return self.profile.hosted_by_openai or is_openai_hosted(self.base_url)

    # -- remix, edit, extend ------------------------------------------------------

    def remix(
        self,
        video_id: str,
        *,
        prompt: str,
        rate_limit_attempts: int = 3,
        reconcile_since: float | None = None,
    ) -> Video:
        """A new job from a completed video and a new prompt; its ``remixed_from_video_id`` is ``video_id``.

        Sent once, like create (see the module's rules); a retry passes the first
        attempt's start as ``reconcile_since`` so a remix made after all is adopted.
        """
        self.profile.require("remix")
        video_id = check_id(video_id, "video_id", "an id such as video_123")
        prompt = check_prompt(prompt)
        return self._send_job(
            "remix",
            lambda: self._writes.videos.remix(video_id, prompt=prompt),
            Expected(prompt, remixed_from=video_id),
            rate_limit_attempts=rate_limit_attempts,
            reconcile_since=reconcile_since,
            source_id=video_id,
        )

    def edit(
        self,
        *,
        prompt: str,
        video: str | Path,
        rate_limit_attempts: int = 3,
        reconcile_since: float | None = None,
    ) -> Video:
        """A new job that edits ``video`` (a completed video's id, or a local MP4 to upload) per ``prompt``.

        The output keeps the source's size and length. Sent once, like create.
        """
        prompt = check_prompt(prompt)
        source = self._source("edit", video)
        if source.video_id is not None:
            body = {"prompt": prompt, "video": source.as_reference()}
            return self._send_job(
                "edit",
                lambda: self._writes.post("/videos/edits", body=body, cast_to=Video),
                lambda: self._expect_from_source(prompt, source, added_seconds=0),
                rate_limit_attempts=rate_limit_attempts,
                reconcile_since=reconcile_since,
                source_id=source.video_id,
            )
        upload = source.as_upload()
        return self._send_job(
            "edit",
            lambda: self._writes.videos.edit(prompt=prompt, video=upload),
            Expected(prompt),
            rate_limit_attempts=rate_limit_attempts,
            reconcile_since=reconcile_since,
        )

    def extend(
        self,
        *,
        prompt: str,
        seconds: int | str,
        video: str | Path,
        rate_limit_attempts: int = 3,
        reconcile_since: float | None = None,
    ) -> Video:
        """A new job: ``video`` followed by a new ``seconds``-long segment (4, 8, 12, 16 or 20) per ``prompt``.

        The result is one video whose ``seconds`` is the sum. ``video`` is a completed
        video's id or a local MP4 to upload. Sent once, like create.
        """
        prompt = check_prompt(prompt)
        segment = check_extension_seconds(seconds)
        source = self._source("extend", video)
        if source.video_id is not None:
            body = {"prompt": prompt, "seconds": segment, "video": source.as_reference()}
            return self._send_job(
                "extend",
                lambda: self._writes.post("/videos/extensions", body=body, cast_to=Video),
                lambda: self._expect_from_source(prompt, source, added_seconds=int(segment)),
                rate_limit_attempts=rate_limit_attempts,
                reconcile_since=reconcile_since,
                source_id=source.video_id,
            )
        upload = source.as_upload()
        return self._send_job(
            "extend",
            # The SDK's type lists 4/8/12 only; its docstring (and the API) take 16 and 20 too.
            lambda: self._writes.videos.extend(prompt=prompt, seconds=cast(VideoSeconds, segment), video=upload),
            Expected(prompt),
            rate_limit_attempts=rate_limit_attempts,
            reconcile_since=reconcile_since,
        )

    # -- characters -----------------------------------------------------------------

    def create_character(
        self, *, name: str, video: str | Path, rate_limit_attempts: int = 3
    ) -> VideoCreateCharacterResponse:
        """A reusable character from ``video`` (a local MP4 to upload, or a video id where the server takes one).

        Sent once: characters cannot be listed, so an ambiguous failure is not
        reconciled; the :class:`TransientError` says a retry may make a second one.
        """
        name = check_name(name)
        source = self._source("characters", video)
        if source.video_id is not None:
            body = {"name": name, "video": source.as_reference()}

            def send() -> VideoCreateCharacterResponse:
                return self._writes.post("/videos/characters", body=body, cast_to=VideoCreateCharacterResponse)

        else:
            upload = source.as_upload()

            def send() -> VideoCreateCharacterResponse:
                return self._writes.videos.create_character(name=name, video=upload)

        for attempt in range(1, rate_limit_attempts + 1):
            try:
                character = self._send_character(send)
                if not is_safe_id(character.id):
                    raise UntrustedAnswerError(
                        f"the server at {self.base_url} answered create_character with an id that is not safe "
                        f"to use ({shown(character.id)}; an id holds {ID_RULE})",
                        server=self.base_url,
                    )
                return character
            except TransientError as error:
                if error.status_code != 429 or attempt == rate_limit_attempts:
                    raise
                self._wait_out(error, attempt, "create_character")
        raise AssertionError("unreachable")

    def _send_character(self, send: Callable[[], VideoCreateCharacterResponse]) -> VideoCreateCharacterResponse:
        try:
            return send()
        except openai.APIStatusError as error:
            shutdown = (
                hosted_shutdown_error(error, operation="create_character", base_url=self.base_url)
                if self.hosted_by_openai
                else None
            )
            if shutdown is not None:
                raise shutdown from error
            mapped = status_error(error)
            if isinstance(mapped, TransientError) and error.status_code >= 500:
                mapped = TransientError(
                    f"{mapped} (the character may have been made; a retry may make a second one)",
                    status_code=error.status_code,
                    retry_after=mapped.retry_after,
                )
            raise mapped from error
        except openai.APIConnectionError as error:
            raise TransientError(
                f"connection to {self.base_url} failed during create_character (the character may have been "
                f"made; a retry may make a second one): {error}"
            ) from error

    def get_character(self, character_id: str) -> VideoGetCharacterResponse:
        """A character by id (a read: retried by the SDK on 429 and 5xx)."""
        self.profile.require("characters")
        character_id = check_id(character_id, "character_id", "an id such as char_123")
        try:
            return self._reads.videos.get_character(character_id)
        except openai.NotFoundError as error:
            raise ServerRejectedError(
                f"character {character_id} does not exist on the server: {error.message}", status_code=404
            ) from error
        except openai.APIStatusError as error:
            raise status_error(error) from error
        except openai.APIConnectionError as error:
            raise TransientError(f"cannot reach {self.base_url}: {error}") from error

    # -- the sending rules --------------------------------------------------------------

    def _source(self, operation: VideoOperation, video: str | Path) -> VideoSource:
        self.profile.require(operation)
        source = video_source(video)
        self.profile.require(operation, source="id" if source.video_id is not None else "upload")
        return source

    def _expect_from_source(self, prompt: str, source: VideoSource, *, added_seconds: int) -> Expected:
        """Size and length of an edit (``added_seconds=0``) or extension of a video by id: read from the source."""
        assert source.video_id is not None
        try:
            original = self._reads.videos.retrieve(source.video_id)
        except openai.APIError as error:
            logger.warning("cannot read %s to reconcile (%s); matching the prompt only", source.video_id, error)
            return Expected(prompt)
        seconds = str(original.seconds)
        total = str(int(seconds) + added_seconds) if seconds.isdigit() else None
        return Expected(prompt, size=original.size, seconds=total)

    def _send_job(
        self,
        operation: str,
        send: Callable[[], Video],
        expected: Expectation,
        *,
        rate_limit_attempts: int,
        reconcile_since: float | None,
        source_id: str | None = None,
    ) -> Video:
        """Send one job-making request. Raises :class:`TransientError` only when no job was found."""
        resolved: list[Expected] = []

        def expectation() -> Expected:
            if not resolved:
                resolved.append(expected if isinstance(expected, Expected) else expected())
            return resolved[0]

        if reconcile_since is not None:
            found = self._find(expectation(), since=reconcile_since, what=operation)
            if found is not None:
                return found
        for attempt in range(1, rate_limit_attempts + 1):
            try:
                return self._send_once(operation, send, expectation, source_id)
            except TransientError as error:
                if error.status_code != 429 or attempt == rate_limit_attempts:
                    raise
                self._wait_out(error, attempt, operation)
        raise AssertionError("unreachable")

    def _send_once(
        self, operation: str, send: Callable[[], Video], expectation: Callable[[], Expected], source_id: str | None
    ) -> Video:
        started = time.time()
        try:
            video = send()
        except openai.APIStatusError as error:
            if self.hosted_by_openai:
                shutdown = hosted_shutdown_error(
                    error, operation=operation, base_url=self.base_url, source_id=source_id
                )
                if shutdown is not None:
                    raise shutdown from error
            if error.status_code == 429 or error.status_code < 500:
                raise status_error(error) from error
            found = self._find(expectation(), since=started, attempts=RECONCILE_ATTEMPTS, what=operation)
            if found is not None:
                return found
            raise status_error(error) from error
        except openai.APIConnectionError as error:
            # A timeout or reset: the server may still be creating the job; look a few times.
            found = self._find(expectation(), since=started, attempts=RECONCILE_ATTEMPTS, what=operation)
            if found is not None:
                return found
            raise TransientError(f"connection to {self.base_url} failed during {operation}: {error}") from error
        self._check_answer(video, operation)
        logger.info("%s: video %s (%s, %s s, %s)", operation, video.id, video.model, video.seconds, video.size)
        return video

    def _check_answer(self, video: Video, what: str) -> None:
        """Refuse an answer whose id or model could not safely name a file, key, record or log line.

        Raised after a job-making request the job may be paid for: the message says so and
        names the server, and nothing (no receipt, no file, no further request) is made from it.
        """
        if not is_safe_id(video.id):
            raise UntrustedAnswerError(
                f"the server at {self.base_url} answered the {what} with an id that is not safe to use "
                f"({shown(video.id)}; an id holds {ID_RULE}): nothing was done with it, though the server "
                "may count it as a paid job",
                server=self.base_url,
            )
        if video.model is not None and not is_safe_model(video.model):
            raise UntrustedAnswerError(
                f"the server at {self.base_url} answered the {what} of {video.id} with a model name that is "
                f"not safe to use ({shown(video.model)}): nothing was done with it",
                server=self.base_url,
                video_id=video.id,
            )

    def _find(self, expected: Expected, *, since: float, attempts: int = 1, what: str = "create") -> Video | None:
        """After an ambiguous request, look for the job the server may have made anyway."""
        if not self.profile.supports_list:
            logger.warning(
                "provider %s cannot list videos, so an ambiguous %s cannot be reconciled; a retry may duplicate",
                self.profile.name,
                what,
            )
            return None
        for attempt in range(attempts):
            if attempt:
                time.sleep(RECONCILE_DELAY)
            try:
                recent = self._reads.videos.list(limit=50, order="desc")
            except openai.APIError as error:
                logger.warning(
                    "cannot list videos to reconcile an ambiguous %s (%s); a retry may duplicate", what, error
                )
                return None
            for video in recent.data:
                if not is_safe_id(video.id):
                    continue  # never adopted: it could not be followed safely
                if expected.matches(video, since) and _adopt(self.base_url, video.id):
                    logger.warning("%s failed ambiguously, but the server made %s; using it", what, video.id)
                    return video
        return None

    @staticmethod
    def _wait_out(error: TransientError, attempt: int, operation: str) -> None:
        delay = error.retry_after if error.retry_after is not None else float(attempt)
        logger.warning("%s rate-limited; retrying in %.1fs (attempt %d)", operation, delay, attempt)
        time.sleep(delay)
