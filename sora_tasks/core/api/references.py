"""The inputs of remix, edit, extend, characters and image references, checked before anything is sent.

No SDK import here: the CLI checks its input before paying for one. Every refusal is
an :class:`InvalidRequestError` (a ``ValueError``) naming the field and what it takes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..errors import InvalidRequestError
from ..ids import ID_RULE, is_safe_id
from ..media.containers import mp4_problem
from ..text import shown
from .request import PROMPT_LIMIT

# The extension segment's length: openai-python's extend docstring says 4, 8, 12, 16 or 20
# (its VideoSeconds type only 4/8/12; the docstring is the API's word).
EXTENSION_SECONDS = ("4", "8", "12", "16", "20")
_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|webp);base64,[A-Za-z0-9+/=\s]+")


@dataclass(frozen=True)
class VideoSource:
    """The video an edit, extension or character starts from: a server's video id or a local MP4."""

    video_id: str | None = None
    path: Path | None = None

    @property
    def kind(self) -> str:
        return "id" if self.video_id is not None else "upload"

    def as_reference(self) -> dict[str, str]:
        """The JSON ``{"id": ...}`` object the API takes for a video by id."""
        assert self.video_id is not None
        return {"id": self.video_id}

    def as_upload(self) -> tuple[str, bytes, str]:
        """The (filename, content, mime) tuple the SDK sends as a multipart file."""
        assert self.path is not None
        return (self.path.name, self.path.read_bytes(), "video/mp4")


def check_prompt(prompt: object, field: str = "prompt") -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequestError(f"{field} must be a non-empty string")
    if len(prompt) > PROMPT_LIMIT:
        raise InvalidRequestError(f"{field} is {len(prompt)} characters; the limit is {PROMPT_LIMIT}")
    return prompt


def check_id(value: object, field: str, example: str) -> str:
    """A server id given to us (an argument, a manifest): the one rule of :mod:`..ids`.

    ``example`` completes "``field`` must be ...", e.g. "an id such as video_123".
    """
    text = value.strip() if isinstance(value, str) else ""
    if not is_safe_id(text):
        raise InvalidRequestError(f"{field} must be {example}; an id holds {ID_RULE}, got {shown(value)}")
    return text


def check_extension_seconds(seconds: object) -> str:
    text = str(seconds).strip()
    if text not in EXTENSION_SECONDS:
        raise InvalidRequestError(
            f"seconds (the new segment's length) must be one of {', '.join(EXTENSION_SECONDS)}, got {seconds!r}"
        )
    return text


def check_name(name: object, field: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRequestError(f"{field} must be a non-empty string")
    return name.strip()


def check_image_url(url: object) -> str:
    """An http(s) URL the server fetches, or a base64 ``data:image/png|jpeg|webp`` URL."""
    text = url.strip() if isinstance(url, str) else ""
    parsed = urlparse(text)
    if (parsed.scheme in ("http", "https") and parsed.hostname) or _DATA_IMAGE.fullmatch(text):
        return text
    shown = text if len(text) <= 80 else text[:77] + "..."
    raise InvalidRequestError(
        f"image_url must be an http(s) URL or a data:image/png|jpeg|webp;base64,... URL, got {shown!r}"
    )


def video_source(video: object, field: str = "video") -> VideoSource:
    """A video id (``video_...``) or the path of a local MP4 (a ``Path``, or a string that names a file).

    A string is a path when it ends in .mp4/.m4v/.mov, starts with ``.``, ``~`` or
    ``/``, or holds a path separator without being a ``video_`` id; else it is an id.
    """
    if isinstance(video, Path):
        return VideoSource(path=_check_mp4(video, field))
    if not isinstance(video, str) or not video.strip():
        raise InvalidRequestError(f"{field} must be a video id (such as video_123) or a local .mp4 path, got {video!r}")
    text = video.strip()
    if text.startswith("s3://"):
        raise InvalidRequestError(f"{field}: {text} is an S3 object; download it and pass the local .mp4 path")
    looks_like_path = (
        text.lower().endswith(_VIDEO_SUFFIXES)
        or text.startswith((".", "~", "/"))
        or (os.sep in text and not text.startswith("video_"))
    )
    if looks_like_path:
        return VideoSource(path=_check_mp4(Path(text).expanduser(), field))
    return VideoSource(video_id=check_id(text, field, "a video id such as video_123 or a local .mp4 path"))


def _check_mp4(path: Path, field: str) -> Path:
    if not path.is_file():
        raise InvalidRequestError(f"{field}: no such file: {path} (give a video id or a local .mp4 path)")
    if (problem := mp4_problem(path)) is not None:
        raise InvalidRequestError(f"{field}: {path} is not an MP4 (video/mp4) file: {problem}")
    return path
