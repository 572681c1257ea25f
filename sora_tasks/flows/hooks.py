"""What happens when a run ends badly or well, in Prefect's own terms.

- :func:`keep_for_collection`: a video that was paid for but not delivered (deadline
  passed, upload failed) is written to the ledger, so the ``collect-pending``
  deployment delivers it later.
- :func:`seed_callbacks` turns the seed's ``on_complete`` / ``on_error`` callbacks
  into ``on_completion`` / ``on_failure`` state hooks for ``flow.with_options(...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sora_tasks.blocks import VideosApi
from sora_tasks.core.api.request import VideoRequest
from sora_tasks.core.api.settings import ApiSettings
from sora_tasks.core.errors import VideoJobError, VideoQualityError
from sora_tasks.core.storage.ledger import Ledger, PendingVideo

from .delivery import Delivery, saved_name

logger = logging.getLogger("sora_tasks.flows")
Hook = Callable[[Any, Any, Any], None]


def pending_record(
    video_id: str,
    request: VideoRequest,
    delivery: Delivery,
    settings: ApiSettings,
    api: VideosApi | str | None,
    reason: str = "submitted",
) -> PendingVideo:
    """What a later sweep needs to deliver the video: where, and how to reach the server (never a key)."""
    return PendingVideo.of(
        video_id,
        request,
        delivery.output,
        base_url=settings.base_url,
        provider=settings.provider,
        api_block=saved_name(api),
        destination_block=delivery.bucket_block_name,
        reason=reason,
        quality=settings.quality,
    )


def keep_for_collection(
    error: BaseException,
    video_id: str,
    request: VideoRequest,
    delivery: Delivery,
    settings: ApiSettings,
    api: VideosApi | str | None,
    ledger: str | None,
) -> None:
    if isinstance(error, (VideoJobError, VideoQualityError)):
        # The job itself failed, or its video failed the quality check (kept beside the
        # output, marked in its receipt): nothing a sweep should deliver.
        return
    book = Ledger(ledger)
    book.add(pending_record(video_id, request, delivery, settings, api, reason=type(error).__name__))
    logger.warning(
        "video %s was paid for but not delivered (%s); recorded in %s for collect-pending",
        video_id,
        type(error).__name__,
        book.location,
    )


def _error_of(state: Any) -> BaseException | None:
    result = state.result(raise_on_failure=False)
    return result if isinstance(result, BaseException) else None


def seed_callbacks(
    on_complete: Callable[[Any], None] | None = None, on_error: Callable[[str], None] | None = None
) -> dict[str, list[Hook]]:
    """``generate_video.with_options(**seed_callbacks(on_complete=..., on_error=...))``.

    ``on_complete`` receives the flow's result; ``on_error`` the failure's message.
    """
    hooks: dict[str, list[Hook]] = {}
    if on_complete is not None:
        hooks["on_completion"] = [lambda flow, run, state: on_complete(state.result())]
    if on_error is not None:
        hooks["on_failure"] = [lambda flow, run, state: on_error(str(_error_of(state)))]
    return hooks
