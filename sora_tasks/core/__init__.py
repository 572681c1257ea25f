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
    VideoTimeoutError,
)

if TYPE_CHECKING:
    from .client import DownloadedFile, VideosClient, job_error
    from .images import FITS, PreparedImage, prepare_image
    from .references import EXTENSION_SECONDS, VideoSource, video_source
    from .request import MODEL_SIZES, SECONDS, VideoRequest
    from .settings import ApiSettings
    from .spec import VideoSpec, build_request
    from .storage import Destination, StoredVideo, resolve_destination, store_file

_LAZY = {
    "EXTENSION_SECONDS": "references",
    "VideoSource": "references",
    "video_source": "references",
    "DownloadedFile": "client",
    "VideosClient": "client",
    "job_error": "client",
    "FITS": "request",
    "PreparedImage": "images",
    "prepare_image": "images",
    "MODEL_SIZES": "request",
    "SECONDS": "request",
    "VideoRequest": "request",
    "ApiSettings": "settings",
    "VideoSpec": "spec",
    "build_request": "spec",
    "Destination": "storage",
    "StoredVideo": "storage",
    "resolve_destination": "storage",
    "store_file": "storage",
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
    "InvalidRequestError",
    "ModerationBlockedError",
    "PreparedImage",
    "ServerRejectedError",
    "SoraError",
    "StorageError",
    "StoredVideo",
    "TransientError",
    "VideoExpiredError",
    "VideoJobError",
    "VideoNotReadyError",
    "VideoRequest",
    "VideoSource",
    "VideoSpec",
    "VideoTimeoutError",
    "VideosClient",
    "build_request",
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
