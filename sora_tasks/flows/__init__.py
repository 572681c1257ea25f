"""Prefect flows that deliver Sora videos: sync, manual (submit/status/collect) and batch."""

from .generate import generate_video
from .results import SubmittedVideo, VideoResult

__all__ = ["SubmittedVideo", "VideoResult", "generate_video"]
