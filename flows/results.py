"""What the flows return: plain, typed records that serialise cleanly into Prefect results."""

from __future__ import annotations

from pydantic import BaseModel, Field


class VideoResult(BaseModel):
    """One delivered video."""

    video_id: str
    status: str
    uri: str
    bytes: int
    sha256: str
    model: str
    duration: int
    resolution: str
    expires_at: int | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    thumbnail_uri: str | None = None
    spritesheet_uri: str | None = None
    # created, resumed, recreated, or already delivered (an earlier run's video, nothing paid).
    how: str = "created"


class SubmittedVideo(BaseModel):
    """A job that was created and not waited for (manual and async modes)."""

    video_id: str
    status: str
    model: str
    duration: int
    resolution: str
    output: str | None = None
