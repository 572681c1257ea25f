"""State hooks: what happens when a flow run ends, in Prefect's own terms.

- :func:`record_for_collection` (on the sync flow's ``on_failure``): a video that
  was paid for but not delivered (deadline passed, upload failed) is written to the
  ledger, so the ``collect-pending`` deployment delivers it later.
- :func:`seed_callbacks` turns the seed's ``on_complete`` / ``on_error`` callbacks
  into ``on_completion`` / ``on_failure`` hooks for ``flow.with_options(...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sora_tasks.core.errors import VideoJobError
from sora_tasks.core.ledger import Ledger, PendingVideo

logger = logging.getLogger("sora_tasks.flows")
Hook = Callable[[Any, Any, Any], None]


def _error_of(state: Any) -> BaseException | None:
    result = state.result(raise_on_failure=False)
    return result if isinstance(result, BaseException) else None


def record_for_collection(flow: Any, flow_run: Any, state: Any) -> None:
    error = _error_of(state)
    video_id = getattr(error, "video_id", None)
    if not video_id or isinstance(error, VideoJobError):
        return  # nothing was paid for, or the job itself failed: nothing to deliver
    parameters = flow_run.parameters or {}
    output = parameters.get("output")
    if not output:
        return
    ledger = Ledger(parameters.get("ledger"))
    ledger.add(
        PendingVideo(
            video_id=video_id,
            output=output,
            base_url=parameters.get("base_url"),
            api_key_secret=parameters.get("api_key_secret"),
            provider=parameters.get("provider"),
            s3_bucket_block=parameters.get("s3_bucket_block"),
            reason=type(error).__name__,
        )
    )
    logger.warning(
        "video %s was paid for but not delivered (%s); recorded in %s for collect-pending",
        video_id,
        type(error).__name__,
        ledger.location,
    )


def seed_callbacks(
    on_complete: Callable[[Any], None] | None = None, on_error: Callable[[str], None] | None = None
) -> dict[str, list[Hook]]:
    """``generate_video.with_options(**seed_callbacks(on_complete=..., on_error=...))``.

    ``on_complete`` receives the flow's result; ``on_error`` the failure's message.
    The sync flow's own ``record_for_collection`` hook is kept.
    """
    hooks: dict[str, list[Hook]] = {"on_failure": [record_for_collection]}
    if on_complete is not None:
        hooks["on_completion"] = [lambda flow, run, state: on_complete(state.result())]
    if on_error is not None:
        hooks["on_failure"].append(lambda flow, run, state: on_error(str(_error_of(state))))
    return hooks
