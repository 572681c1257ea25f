"""The deployment trigger prefect-sora ships: run a downstream deployment for every video a batch uploads.

prefect.yaml puts the same trigger on its ``after-upload`` deployment (``prefect deploy``
creates it as an automation owned by that deployment); ``python -m sora_tasks.deployments.serve``
serves that deployment with this object. tests/test_deployments.py checks they agree
and that it fires on a real server.

Why an event trigger on ``sora.video.uploaded`` with ``match_related`` on the flow: each
batch row emits that event from its own task run, with the flow run, the flow
(``generate-videos``) and, when there is one, the deployment as related resources
(``sora_tasks.tasks.run_related``), so the trigger fires for any batch, deployed or run
from Python, and for nothing else (the sync flow is ``generate-video``). One downstream
run per video, parameters from the event. To follow one batch deployment only, match the
deployment instead: ``{"prefect.resource.role": "deployment", "prefect.resource.name":
"nightly-batch"}``. To run once per finished batch instead of once per video, trigger
on ``prefect.flow-run.Completed`` with the same ``match_related`` on the flow.
"""

from __future__ import annotations

from prefect.events import DeploymentEventTrigger

BATCH_VIDEO_UPLOADED_NAME = "sora: after-upload for each video a batch uploads"


def batch_video_uploaded() -> DeploymentEventTrigger:
    return DeploymentEventTrigger(
        name=BATCH_VIDEO_UPLOADED_NAME,
        description="Runs the after-upload deployment for every sora.video.uploaded event of a generate-videos run.",
        enabled=True,
        expect={"sora.video.uploaded"},
        match={"prefect.resource.id": "sora.video.*"},
        match_related={"prefect.resource.role": "flow", "prefect.resource.name": "generate-videos"},
        parameters={
            "uri": "{{ event.payload.uri }}",
            "video_id": "{{ event.resource.name }}",
            "thumbnail_uri": "{{ event.payload.thumbnail_uri }}",
            "spritesheet_uri": "{{ event.payload.spritesheet_uri }}",
            "model": "{{ event.payload.model }}",
        },
    )
