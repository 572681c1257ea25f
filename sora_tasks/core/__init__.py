"""The engine-agnostic core: no Prefect import, usable from any orchestrator or script.

Names are imported on first use (PEP 562), so checking input does not pay for the
OpenAI SDK or Pillow until a client or an image is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BatchFailedError,
    ConfigurationError,
    DownloadError,
    InvalidRequestError,
    ModerationBlockedError,
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
    from .api.client import DownloadedFile, VideosClient, job_error
    from .api.references import EXTENSION_SECONDS, VideoSource, video_source
    from .api.request import MODEL_SIZES, SECONDS, VideoRequest
    from .api.settings import ApiSettings
    from .media.fit import FITS
    from .media.images import PreparedImage, prepare_image
    from .media.quality import Expectation, QualityPolicy, QualityReport, QualityThresholds, inspect_video
    from .spec import VideoSpec, build_request
    from .storage.destinations import Destination, StoredVideo, resolve_destination, store_file

_LAZY = {
    "EXTENSION_SECONDS": "api.references",
    "VideoSource": "api.references",
    "video_source": "api.references",
    "DownloadedFile": "api.client",
    "VideosClient": "api.client",
    "job_error": "api.client",
    "FITS": "media.fit",
    "PreparedImage": "media.images",
    "prepare_image": "media.images",
    "Expectation": "media.quality",
    "QualityPolicy": "media.quality",
    "QualityReport": "media.quality",
    "QualityThresholds": "media.quality",
    "inspect_video": "media.quality",
    "MODEL_SIZES": "api.request",
    "SECONDS": "api.request",
    "VideoRequest": "api.request",
    "ApiSettings": "api.settings",
    "VideoSpec": "spec",
    "build_request": "spec",
    "Destination": "storage.destinations",
    "StoredVideo": "storage.destinations",
    "resolve_destination": "storage.destinations",
    "store_file": "storage.destinations",
}

__all__ = [
    "EXTENSION_SECONDS",
    "FITS",
    "MODEL_SIZES",
    "SECONDS",
    "ApiSettings",
    "BatchFailedError",
    "ConfigurationError",
    "Destination",
    "DownloadError",
    "DownloadedFile",
    "Expectation",
    "InvalidRequestError",
    "ModerationBlockedError",
    "PreparedImage",
    "QualityPolicy",
    "QualityReport",
    "QualityThresholds",
    "ServerRejectedError",
    "SoraError",
    "StorageError",
    "StoredVideo",
    "TransientError",
    "VideoExpiredError",
    "VideoJobError",
    "VideoNotReadyError",
    "VideoQualityError",
    "VideoRequest",
    "VideoSource",
    "VideoSpec",
    "VideoTimeoutError",
    "VideosClient",
    "build_request",
    "inspect_video",
    "job_error",
    "prepare_image",
    "resolve_destination",
    "store_file",
    "video_source",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
