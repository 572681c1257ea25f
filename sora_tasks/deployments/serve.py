"""Serve every flow as a deployment from this process: no work pool or worker needed.

python -m sora_tasks.deployments.serve            # the same deployments as prefect.yaml

It needs a running Prefect server (``PREFECT_API_URL``) and exits with status 2 without
one: Prefect would otherwise serve on a temporary server that no other shell can reach.
SIGTERM or Ctrl-C stops it within seconds (in-flight runs are cancelled, schedules
paused); a second signal stops it at once.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any

import anyio
from prefect.client.orchestration import get_client
from prefect.logging import get_logger
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL

from sora_tasks.flows.batch import generate_videos
from sora_tasks.flows.deferred import collect_pending
from sora_tasks.flows.derive import edit_video, extend_video, remix_video
from sora_tasks.flows.downstream import video_uploaded
from sora_tasks.flows.generate import generate_video
from sora_tasks.flows.manual import collect_video, submit_video
from sora_tasks.flows.review import expire_review, review_video
from sora_tasks.flows.storyboard import storyboard

from .automations import ZOMBIE_DETECTION, apply
from .triggers import batch_video_uploaded

NO_API = (
    "no reachable Prefect API: start one with `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
)
HEALTHCHECK_TIMEOUT = 10.0
# Pausing the schedules on the way out gets this long; the server may be gone too.
PAUSE_TIMEOUT = 5.0

logger = get_logger("sora.serve")
# As prefect.yaml: derived videos and storyboards go where adhoc's do.
DERIVED_DEFAULTS = {"output": "videos/{date}/{video_id}.mp4"}
# A suspended review holds nothing while it waits, so its deployment gives a person a day.
REVIEW_DEFAULTS = {**DERIVED_DEFAULTS, "timeout": 86400}


def build_deployments() -> list[Any]:
    return [
        generate_video.to_deployment(name="adhoc", tags=["sora"], concurrency_limit=20),
        remix_video.to_deployment(name="remix", tags=["sora"], parameters=DERIVED_DEFAULTS),
        edit_video.to_deployment(name="edit", tags=["sora"], parameters=DERIVED_DEFAULTS),
        extend_video.to_deployment(name="extend", tags=["sora"], parameters=DERIVED_DEFAULTS),
        storyboard.to_deployment(name="storyboard", tags=["sora"], parameters=DERIVED_DEFAULTS),
        review_video.to_deployment(name="review", tags=["sora", "review"], parameters=REVIEW_DEFAULTS),
        expire_review.to_deployment(name="review-timeout", tags=["sora", "review"]),
        submit_video.to_deployment(name="submit", tags=["sora"]),
        collect_video.to_deployment(name="collect", tags=["sora"]),
        collect_pending.to_deployment(name="collect-pending", tags=["sora"], interval=60, concurrency_limit=1),
        generate_videos.to_deployment(name="nightly-batch", tags=["sora"], cron="0 2 * * *", paused=True),
        generate_videos.to_deployment(name="shard", tags=["sora", "shard"]),
        video_uploaded.to_deployment(name="after-upload", tags=["sora"], triggers=[batch_video_uploaded()]),
    ]


def api_problem() -> str | None:
    """Why the configured Prefect API cannot be used, or None when it answers its health check."""
    url = PREFECT_API_URL.value()
    if not url:
        return "PREFECT_API_URL is not set"
    try:
        with get_client(sync_client=True, httpx_settings={"timeout": HEALTHCHECK_TIMEOUT}) as client:
            error = client.api_healthcheck()
    except Exception as exc:  # a malformed URL fails before any request
        error = exc
    return None if error is None else f"{url}: {type(error).__name__}: {error}"


class ServeRunner(Runner):
    """Prefect's Runner, stopped cleanly and promptly by SIGTERM or SIGINT.

    Prefect's own SIGTERM handler calls the async ``stop()`` without awaiting it, then
    raises SystemExit wherever the event loop happens to be; shutdown then pauses the
    schedules through a client that retries a vanished server for about a minute.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._serving: asyncio.Task[None] | None = None
        self._stop: asyncio.Task[None] | None = None  # held so the stop task is not garbage-collected
        self._signals = 0
        self.served: list[str] = []  # full names, for the ready message

    async def serve(self) -> None:
        self._serving = asyncio.current_task()
        await self.start()

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        # Runner.start() installs this for SIGTERM; main() installs it for both signals before that.
        self._signals += 1
        serving = self._serving
        if serving is None:
            raise KeyboardInterrupt  # not serving yet: nothing to stop gracefully
        loop = serving.get_loop()
        if loop.is_closed():
            return
        if self._signals == 1:
            loop.call_soon_threadsafe(self._stop_gracefully, serving)
        else:
            loop.call_soon_threadsafe(serving.cancel)

    def _stop_gracefully(self, serving: asyncio.Task[None]) -> None:
        if not self.started:  # still starting: nothing to cancel or pause yet
            serving.cancel()
            return
        logger.info("stopping: cancelling in-flight runs and pausing schedules (signal again to stop at once)")
        self._stop = asyncio.ensure_future(self.astop())

    async def _pause_schedules(self) -> None:
        with anyio.move_on_after(PAUSE_TIMEOUT) as scope:
            try:
                await super()._pause_schedules()  # type: ignore[no-untyped-call]  # unannotated in Prefect
            except Exception as error:
                logger.warning("could not pause the deployments' schedules: %s", error)
        if scope.cancelled_caught:
            logger.warning("could not pause the deployments' schedules within %.0f s", PAUSE_TIMEOUT)

    async def __aenter__(self) -> ServeRunner:
        await super().__aenter__()
        # Printed once the runner is up (the tests wait for it), not before it registers.
        print(f"serving {', '.join(self.served)}; SIGTERM or Ctrl-C stops", flush=True)
        return self


def _interrupt(*args: Any) -> None:
    raise KeyboardInterrupt


def _on_stop_signals(handler: Callable[..., None]) -> None:
    signal.signal(signal.SIGTERM, handler)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # as Python does: an ignored SIGINT stays ignored
        signal.signal(signal.SIGINT, handler)


def main() -> None:
    # Installed now rather than by Runner.start(): a stop request while the API is checked
    # or the deployments register ends the process quietly, with status 0.
    _on_stop_signals(_interrupt)
    try:
        problem = api_problem()
        if problem is not None:
            print(f"{NO_API} ({problem})", file=sys.stderr)
            sys.exit(2)
        # Only now: a Runner's client, with no API configured, would start a temporary server.
        runner = ServeRunner(pause_on_shutdown=True)
        _on_stop_signals(runner.handle_sigterm)
        for deployment in build_deployments():
            runner.add_deployment(deployment)
            runner.served.append(deployment.full_name)
        # Zombie detection ships with the deployments: a shard whose worker died is marked
        # Crashed (its heartbeats stop) and its batch's parent runs its rows again.
        for name, automation_id in apply([ZOMBIE_DETECTION]):
            logger.info("automation %s: %s", name, automation_id)
        asyncio.run(runner.serve())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    logger.info("stopped")


if __name__ == "__main__":
    main()
