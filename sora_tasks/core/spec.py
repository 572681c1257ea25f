"""What to make, in the seed's words, and the one function that turns it into a checked request.

Flows, the CLI and the batch manifest all describe a video as a :class:`VideoSpec`
(``duration``, ``resolution``); :func:`build_request` checks it against the server's
provider profile and produces the wire request (``seconds``, ``size``) exactly once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .api.request import VideoRequest
from .api.settings import ApiSettings
from .media.fit import Fit


class VideoSpec(BaseModel):
    """One video to make. Checked by :func:`build_request`, which names any bad field."""

    model_config = ConfigDict(frozen=True)

    prompt: str = Field(description="What the video shows.")
    image: str | None = Field(
        default=None, description="Reference image: a path or s3:// URI, fitted to the resolution."
    )
    model: str | None = Field(default=None, description="sora-2 or sora-2-pro; empty: the API block's model.")
    duration: int | str = Field(default=4, description="Seconds: 4, 8 or 12 on OpenAI's API.")
    resolution: str = Field(
        default="1280x720", description="720x1280 or 1280x720; sora-2-pro also 1024x1792 and 1792x1024."
    )
    fit: Fit = Field(default="cover", description="How the image is fitted: cover crops, contain pads, stretch.")
    extra_fields: dict[str, Any] = Field(
        default_factory=dict, description="Create fields the provider accepts (e.g. seed); see `sora-video providers`."
    )
    request_id: str | None = Field(
        default=None, description="Makes an otherwise identical request a new, separately paid job."
    )


def as_spec(video: VideoSpec | str | dict[str, Any]) -> VideoSpec:
    """A spec from a spec, a bare prompt, or its fields."""
    if isinstance(video, VideoSpec):
        return video
    if isinstance(video, str):
        return VideoSpec(prompt=video)
    return VideoSpec.model_validate(video)


def build_request(spec: VideoSpec, settings: ApiSettings) -> VideoRequest:
    """The checked wire request; raises ``InvalidRequestError`` (a ``ValueError``) naming the field."""
    return settings.profile.build_request(
        spec.prompt,
        model=spec.model or settings.model,
        duration=spec.duration,
        resolution=spec.resolution,
        extra=spec.extra_fields,
    )
