"""What can be asked of the Videos API, checked before anything is sent."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequestError

STANDARD_SIZES = ("720x1280", "1280x720")
PRO_SIZES = (*STANDARD_SIZES, "1024x1792", "1792x1024")

# The one capability table: which sizes each known model renders.
MODEL_SIZES: dict[str, tuple[str, ...]] = {
    "sora-2": STANDARD_SIZES,
    "sora-2-2025-10-06": STANDARD_SIZES,
    "sora-2-2025-12-08": STANDARD_SIZES,
    "sora-2-pro": PRO_SIZES,
    "sora-2-pro-2025-10-06": PRO_SIZES,
}
SECONDS = ("4", "8", "12")
PROMPT_LIMIT = 32_000
_SIZE_PATTERN = re.compile(r"^(\d{2,5})x(\d{2,5})$")


def _allowed(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values)


def normalize_seconds(duration: int | str, *, strict: bool = True) -> str:
    text = str(duration).strip()
    if strict and text not in SECONDS:
        raise InvalidRequestError(f"duration must be one of {_allowed(SECONDS)} seconds, got {duration!r}")
    if not text.isdigit() or int(text) <= 0:
        raise InvalidRequestError(f"duration must be a positive whole number of seconds, got {duration!r}")
    return text


def normalize_size(resolution: str, model: str, *, known_model: bool) -> str:
    text = str(resolution).strip().lower().replace("×", "x").replace("*", "x")
    if known_model:
        allowed = MODEL_SIZES[model]
        if text not in allowed:
            hint = ""
            if text in PRO_SIZES:
                hint = f" ({text} needs sora-2-pro)"
            elif text in ("1920x1080", "1080x1920"):
                hint = " (the Videos API offers no 1080p size)"
            raise InvalidRequestError(
                f"resolution {resolution!r} is not supported by {model}{hint}; allowed: {_allowed(allowed)}"
            )
        return text
    if not _SIZE_PATTERN.match(text):
        raise InvalidRequestError(f"resolution must look like WIDTHxHEIGHT (e.g. 1280x720), got {resolution!r}")
    return text


@dataclass(frozen=True)
class VideoRequest:
    """A validated create request. Build it with :meth:`build`."""

    prompt: str
    model: str
    seconds: str
    size: str
    # Server-specific create fields (seed, negative_prompt, ...), sent as extra_body.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        prompt: str,
        *,
        model: str = "sora-2",
        duration: int | str = 4,
        resolution: str = "1280x720",
        allow_unknown_models: bool = False,
        extra: Mapping[str, Any] | None = None,
        extra_fields: tuple[str, ...] = (),
    ) -> VideoRequest:
        """Validate and normalise; raises :class:`InvalidRequestError` naming the field.

        ``allow_unknown_models`` admits model names outside the table (self-hosted
        /v1/videos servers); their size and duration are passed through as given.
        ``extra`` create fields must be among the server's ``extra_fields``.
        """
        extra = dict(extra or {})
        unknown = sorted(set(extra) - set(extra_fields))
        if unknown:
            allowed = _allowed(extra_fields) if extra_fields else "none for this provider"
            raise InvalidRequestError(f"extra field(s) {', '.join(unknown)} not accepted; allowed: {allowed}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequestError("prompt must be a non-empty string")
        if len(prompt) > PROMPT_LIMIT:
            raise InvalidRequestError(f"prompt is {len(prompt)} characters; the limit is {PROMPT_LIMIT}")
        model = str(model).strip()
        known = model in MODEL_SIZES
        if not known and not allow_unknown_models:
            raise InvalidRequestError(
                f"model must be one of {_allowed(list(MODEL_SIZES))}, got {model!r} "
                "(other models are accepted with a non-OpenAI base_url)"
            )
        seconds = normalize_seconds(duration, strict=known)
        size = normalize_size(resolution, model, known_model=known)
        return cls(prompt=prompt, model=model, seconds=seconds, size=size, extra=extra)

    @property
    def width(self) -> int:
        return int(self.size.split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("x")[1])

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()

    def fingerprint(self, *, image_sha256: str | None = None, request_id: str | None = None) -> str:
        """A stable key for "the same paid job": used for idempotent creation."""
        payload: dict[str, Any] = {
            "prompt": self.prompt,
            "model": self.model,
            "seconds": self.seconds,
            "size": self.size,
            "image": image_sha256,
            "request_id": request_id,
        }
        if self.extra:
            payload["extra"] = self.extra
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
