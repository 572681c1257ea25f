"""prefect-sora: Sora (OpenAI Videos API) generation as Prefect tasks, flows and a Python API.

``sora_tasks.core`` is engine-agnostic (no Prefect import); ``sora_tasks.tasks``
wraps it for Prefect. ``SoraVideoAdapter`` is the seed's Python API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.errors import (
    BatchFailedError,
    ConfigurationError,
    DownloadError,
    InvalidRequestError,
    ModerationBlockedError,
    ReviewTimeoutError,
    ServerRejectedError,
    SoraError,
    StorageError,
    TransientError,
    VideoExpiredError,
    VideoJobError,
    VideoNotReadyError,
    VideoQualityError,
    VideoTimeoutError,
)

if TYPE_CHECKING:
    from .adapter import SoraVideoAdapter, VideoJob

__all__ = [
    "BatchFailedError",
    "ConfigurationError",
    "DownloadError",
    "InvalidRequestError",
    "ModerationBlockedError",
    "ReviewTimeoutError",
    "ServerRejectedError",
    "SoraError",
    "SoraVideoAdapter",
    "StorageError",
    "TransientError",
    "VideoExpiredError",
    "VideoJob",
    "VideoJobError",
    "VideoNotReadyError",
    "VideoQualityError",
    "VideoTimeoutError",
]


def __getattr__(name: str) -> Any:
    # Imported on first use so `import sora_tasks.core` stays light.
    if name in ("SoraVideoAdapter", "VideoJob"):
        from . import adapter

        return getattr(adapter, name)
    raise AttributeError(f"module 'sora_tasks' has no attribute {name!r}")
