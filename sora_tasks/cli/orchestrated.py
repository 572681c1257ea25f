"""The CLI's commands as Prefect flow runs: chosen when a Prefect API is configured (or --prefect).

Every call is then a flow run in the Prefect UI, with its logs, artifacts and events;
the terminal shows the same progress bar and summary as the plain engine.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.objects import State

from ..blocks import VideosApi
from ..core.jobs import progress as feed
from ..core.jobs.review import Waiting
from ..core.spec import VideoSpec
from ..core.storage.ledger import Ledger
from .backend import Target
from .display import Reporter

if TYPE_CHECKING:
    from .checks import StoryboardInput


def api_parameter(target: Target) -> VideosApi | str:
    """The saved block's name when the call uses it as saved; otherwise an unsaved block.

    Prefect stores a block parameter with its key masked, and a run in this process gets
    the object itself; a key from OPENAI_API_KEY is never put in it (the flow reads the env).
    """
    if target.api_block is not None and not target.overridden:
        return target.api_block
    return VideosApi(**target.settings.model_dump())


def generate(args: argparse.Namespace, target: Target, spec: VideoSpec, reporter: Reporter) -> str:
    from sora_tasks.flows.generate import generate_video

    unsubscribe = feed.subscribe(reporter.update)
    try:
        result = generate_video(
            spec,
            output=args.output,
            api=api_parameter(target),
            destination=args.destination_block,
            previews=args.previews,
            ledger=args.ledger,
            quality=args.quality,
        )
    finally:
        unsubscribe()
    reporter.delivered(result)
    return str(result.uri)


def submit(args: argparse.Namespace, target: Target, spec: VideoSpec) -> str:
    from sora_tasks.flows.manual import submit_video

    submitted = submit_video(
        spec,
        output=args.output,
        api=api_parameter(target),
        destination=args.destination_block,
        ledger=Ledger(args.ledger).location,
        quality=args.quality,
    )
    return str(submitted.video_id)


def status(args: argparse.Namespace, target: Target) -> str:
    from sora_tasks.flows.manual import video_status

    return json.dumps(video_status(args.video_id, api=api_parameter(target)), indent=2)


def collect(args: argparse.Namespace, target: Target, reporter: Reporter) -> str:
    from sora_tasks.flows.manual import collect_video

    result = collect_video(
        args.video_id,
        output=args.output,
        api=api_parameter(target),
        destination=args.destination_block,
        ledger=Ledger(args.ledger).location,
        previews=args.previews,
        quality=args.quality,
    )
    reporter.delivered(result)
    return str(result.uri)


def pending(book: Ledger, target: Target, *, previews: bool = True, outputs: str | None = None) -> list[dict[str, Any]]:
    from sora_tasks.flows.deferred import collect_pending

    return list(collect_pending(ledger=book.location, api=api_parameter(target), previews=previews, outputs=outputs))


def derive(args: argparse.Namespace, target: Target, operation: str, reporter: Reporter) -> str:
    from sora_tasks.flows.derive import edit_video, extend_video, remix_video

    common: dict[str, Any] = {
        "output": args.output,
        "api": api_parameter(target),
        "destination": args.destination_block,
        "previews": args.previews,
        "ledger": args.ledger,
        "request_id": args.request_id,
        "quality": args.quality,
    }
    unsubscribe = feed.subscribe(reporter.update)
    try:
        if operation == "remix":
            result = remix_video(args.video_id, args.prompt, **common)
        elif operation == "edit":
            result = edit_video(args.source, args.prompt, **common)
        else:
            result = extend_video(args.source, args.prompt, args.duration, **common)
    finally:
        unsubscribe()
    reporter.delivered(result)
    return str(result.uri)


def storyboard(args: argparse.Namespace, target: Target, story: StoryboardInput, reporter: Reporter) -> str:
    from sora_tasks.flows.storyboard import storyboard as storyboard_flow

    unsubscribe = feed.subscribe(reporter.update)
    try:
        result = storyboard_flow(
            story.shots,
            output=args.output,
            image=story.image,
            model=story.model,
            resolution=story.resolution,
            duration=story.duration,
            api=api_parameter(target),
            destination=args.destination_block,
            fit=args.fit,
            previews=args.previews,
            ledger=args.ledger,
            request_id=args.request_id,
            quality=args.quality,
        )
    finally:
        unsubscribe()
    for shot in result.shots:
        reporter.say(f"shot {shot.index} of {len(result.shots)} ({shot.duration} s): {shot.video_id} ({shot.how})")
    reporter.delivered(result)
    return str(result.uri)


def character(args: argparse.Namespace, target: Target) -> str:
    from sora_tasks.flows.derive import create_character, get_character

    if args.action == "show":
        found = get_character(args.character_id, api=api_parameter(target))
    else:
        found = create_character(args.name, args.video, api=api_parameter(target))
    return json.dumps(found, indent=2)


def takes(args: argparse.Namespace, target: Target, spec: VideoSpec, *, interactive: bool) -> tuple[str | None, str]:
    """``takes`` as a ``review-video`` flow run, paused while it waits: the answer comes from this terminal
    (it resumes the run) or from the Prefect UI, whichever is first."""
    from sora_tasks.flows.review import review_video

    from .takes import answering

    with answering(interactive=interactive, open_them=args.open, resume=resume_with):
        result = review_video(
            spec,
            takes=args.takes,
            output=args.output,
            api=api_parameter(target),
            destination=args.destination_block,
            timeout=int(args.timeout),
            on_timeout=args.on_timeout,
            max_rounds=args.max_rounds,
            previews=args.previews,
            ledger=args.ledger,
        )
    assert not isinstance(result, State)
    return (result.video.uri if result.video else None), result.message


def resume_with(waiting: Waiting, answer: dict[str, Any], *, patience: float = 60.0) -> bool:
    """Resume the run with a terminal's answer once it waits at that round; False when it moved on
    (decided in the UI, or its deadline passed). The takes are shown a moment before the run is
    paused, so an answer typed at once waits for the pause."""
    import time
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    key = f"review-{waiting.round}"
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(waiting.flow_run_id))
        state = run.state
        if state is not None and state.is_paused() and state.state_details.pause_key == key:
            try:
                resume_flow_run(run.id, run_input=answer)
            except Exception:  # answered meanwhile, in the UI or by the deadline
                return False
            return True
        if key in (run.empirical_policy.pause_keys or set()) or (state is not None and state.is_final()):
            return False  # that wait is over
        time.sleep(0.2)
    return False
