"""What runs after a batch delivers a video: the example target of prefect.yaml's ``after-upload`` trigger.

The trigger (``sora_tasks/deployments/triggers.py``, the same in prefect.yaml) runs this deployment
once per ``sora.video.uploaded`` event of a ``generate-videos`` run, with the event's
URIs as parameters. Point the deployment's entrypoint at your own flow (publish,
transcode, review...) taking the same parameters, or copy the trigger onto your own
deployment.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger


@flow(name="video-uploaded")
def video_uploaded(
    uri: str,
    video_id: str,
    thumbnail_uri: str | None = None,
    spritesheet_uri: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Receive one delivered video: where it is, its previews, its model. This example only logs it."""
    get_run_logger().info(
        "video %s (%s) delivered at %s; thumbnail %s, spritesheet %s",
        video_id,
        model or "model unknown",
        uri,
        thumbnail_uri or "none",
        spritesheet_uri or "none",
    )
    return {
        "video_id": video_id,
        "uri": uri,
        "thumbnail_uri": thumbnail_uri,
        "spritesheet_uri": spritesheet_uri,
        "model": model,
    }
