"""Serve every flow as a deployment from this process: no work pool or worker needed.

python -m deployments.serve            # the same deployments as prefect.yaml
"""

from __future__ import annotations

from typing import Any

from prefect import serve

from flows.batch import generate_videos
from flows.deferred import collect_pending
from flows.generate import generate_video
from flows.manual import collect_video, submit_video


def build_deployments() -> list[Any]:
    return [
        generate_video.to_deployment(name="adhoc", tags=["sora"], concurrency_limit=20),
        submit_video.to_deployment(name="submit", tags=["sora"]),
        collect_video.to_deployment(name="collect", tags=["sora"]),
        collect_pending.to_deployment(name="collect-pending", tags=["sora"], interval=60, concurrency_limit=1),
        generate_videos.to_deployment(name="nightly-batch", tags=["sora"], cron="0 2 * * *", paused=True),
    ]


def main() -> None:
    serve(*build_deployments())


if __name__ == "__main__":
    main()
