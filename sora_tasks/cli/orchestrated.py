"""The CLI's commands as Prefect flow runs: chosen when a Prefect API is configured (or --prefect).

Every call is then a flow run in the Prefect UI, with its logs, artifacts and events;
the terminal shows the same progress bar and summary as the plain engine.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from ..core import progress as feed
from ..core.ledger import Ledger
from . import services
from .backend import Target
from .display import Reporter


def _connection(target: Target) -> dict[str, Any]:
    return {"base_url": target.base_url, "api_key_secret": target.api_key_secret, "provider": target.provider}


def _use_key(target: Target) -> None:
    # The flows read OPENAI_API_KEY themselves; the emulator's key is not a secret.
    if target.emulator:
        os.environ["OPENAI_API_KEY"] = target.api_key() or ""


def _common(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    return {
        "prompt": args.prompt,
        "image": args.image,
        "model": args.model,
        "duration": args.duration,
        "resolution": args.resolution,
        "fit": args.fit,
        "request_id": args.request_id,
        "extra_fields": dict(args.extra) or None,
        **_connection(target),
    }


def generate(args: argparse.Namespace, target: Target, reporter: Reporter) -> str:
    from flows.generate import generate_video

    _use_key(target)
    unsubscribe = feed.subscribe(reporter.update)
    try:
        result = generate_video(
            output=args.output,
            max_wait=args.max_wait,
            thumbnail=args.thumbnail,
            ledger=args.ledger,
            **_common(args, target),
        )
    finally:
        unsubscribe()
    reporter.delivered(
        uri=result.uri,
        size=result.bytes,
        seconds=result.seconds,
        resolution=result.size,
        model=result.model,
        video_id=result.video_id,
    )
    return str(result.uri)


def submit(args: argparse.Namespace, target: Target) -> str:
    from flows.manual import submit_video

    _use_key(target)
    submitted = submit_video(output=args.output, ledger=Ledger(args.ledger).location, **_common(args, target))
    return str(submitted.video_id)


def status(args: argparse.Namespace, target: Target) -> str:
    from flows.manual import video_status

    _use_key(target)
    return json.dumps(video_status(args.video_id, **_connection(target)), indent=2)


def collect(args: argparse.Namespace, target: Target, reporter: Reporter) -> str:
    from flows.manual import collect_video

    _use_key(target)
    result = collect_video(args.video_id, output=args.output, **_connection(target))
    Ledger(args.ledger).remove(args.video_id)  # delivered: `pending` must not deliver it again
    reporter.delivered(
        uri=result.uri,
        size=result.bytes,
        seconds=result.seconds,
        resolution=result.size,
        model=result.model,
        video_id=result.video_id,
    )
    return str(result.uri)


def pending(book: Ledger) -> list[dict[str, Any]]:
    from flows.deferred import collect_pending

    if any(services.is_emulator_url(record.base_url) for record in book.pending()):
        os.environ.setdefault("OPENAI_API_KEY", services.EMULATOR_KEY)
    return list(collect_pending(ledger=book.location, limit=10_000))
