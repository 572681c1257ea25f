"""The engine-agnostic core: no Prefect import, usable from any orchestrator or script."""

from .client import DownloadedFile, VideosClient, job_error
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
from .images import FITS, PreparedImage, prepare_image
from .request import MODEL_SIZES, SECONDS, VideoRequest
from .storage import Destination, StoredVideo, resolve_destination, store_file

__all__ = [
    "FITS",
    "MODEL_SIZES",
    "SECONDS",
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
    "VideoTimeoutError",
    "VideosClient",
    "job_error",
    "prepare_image",
    "resolve_destination",
    "store_file",
]
