"""What the flows return: plain, typed records that serialise cleanly into Prefect results."""

from __future__ import annotations

from typing import Any

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
    # The quality check's report: passed, figures, failures (None: not checked, or an earlier run's video).
    quality: dict[str, Any] | None = None
    # Jobs a quality retry rejected before this one (each kept beside the output as x.rejected.mp4).
    rejected: list[str] = Field(default_factory=list)


class SubmittedVideo(BaseModel):
    """A job that was created and not waited for (manual and async modes)."""

    video_id: str
    status: str
    model: str
    duration: int
    resolution: str
    output: str | None = None


class DerivedResult(VideoResult):
    """A delivered remix, edit or extension."""

    operation: str  # remix, edit or extend
    source: str  # as given: a video id, a local path or an s3:// URI


class ShotResult(BaseModel):
    """One shot of a storyboard: its job is the video up to and including this shot."""

    index: int
    prompt: str
    duration: int  # this shot's own length
    video_id: str
    how: str  # created, resumed, recreated or already delivered


class StoryboardResult(VideoResult):
    """A storyboard's one delivered video (``duration``: the sum of the shots) and each shot's job."""

    shots: list[ShotResult] = Field(default_factory=list)


class TakeResult(BaseModel):
    """One take of a review: its job and previews (``remix_of``: the take a remix was made from)."""

    number: int
    video_id: str
    duration: int
    resolution: str
    model: str
    prompt: str
    how: str = "created"
    remix_of: int | None = None
    thumbnail_uri: str | None = None
    spritesheet_uri: str | None = None


class ReviewResult(BaseModel):
    """How a review ended: the decision, the delivered take (``video``; None when nothing was), every take."""

    decision: str  # take, reject or timeout
    by: str  # person or timeout
    take: int | None = None  # the delivered take's number
    video: VideoResult | None = None
    takes: list[TakeResult] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)  # video ids deleted at the provider
    rounds: int = 1
    how: str = "decided"  # or "already decided": an earlier run's decision carried out, nothing asked or paid
    message: str = ""
