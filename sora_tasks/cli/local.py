"""The CLI's commands on the engine-agnostic core: no Prefect import, no server to start.

Used when no Prefect API is configured. A call then costs what the work costs (measured
in docs/benchmarks.md); the guarantees are the core's: one create, reconciled when
ambiguous; a receipt per paid job so a rerun follows it; a paid video that could not be
delivered is recorded in the ledger for ``sora-video pending``.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from ..core import pipeline
from ..core.client import DEFAULT_POLL_INTERVAL, VideosClient, status_dict
from ..core.errors import VideoJobError
from ..core.images import PreparedImage
from ..core.ledger import Ledger, PendingVideo
from ..core.receipts import Receipts
from ..core.request import VideoRequest
from ..core.sweep import sweep_record
from . import services
from .backend import Target
from .display import Reporter

logger = logging.getLogger("sora_tasks.cli")


def client_for(target: Target, profile: Any) -> VideosClient:
    return VideosClient(api_key=target.api_key(), base_url=target.base_url, provider=profile)


def generate(
    args: argparse.Namespace,
    target: Target,
    request: VideoRequest,
    image: PreparedImage | None,
    reporter: Reporter,
    profile: Any,
) -> str:
    client = client_for(target, profile)
    try:
        delivered = pipeline.generate(
            client,
            request,
            args.output,
            image=image,
            request_id=args.request_id,
            receipts=Receipts(),
            max_wait=args.max_wait,
            poll_interval=DEFAULT_POLL_INTERVAL,
            on_progress=reporter.update,
            on_submitted=lambda submitted: reporter.submitted(submitted.video_id, reused=submitted.reused),
            thumbnail=args.thumbnail,
        )
    except Exception as error:
        keep_for_collection(error, args.output, target, args.ledger)
        raise
    finally:
        client.close()
    reporter.delivered(
        uri=delivered.uri,
        size=delivered.bytes,
        seconds=delivered.seconds,
        resolution=delivered.size,
        model=delivered.model,
        video_id=delivered.video_id,
    )
    return delivered.uri


def keep_for_collection(error: BaseException, output: str, target: Target, ledger: str | None) -> None:
    """A video paid for but not delivered (deadline passed, upload failed) goes to the ledger."""
    video_id = getattr(error, "video_id", None)
    if not video_id or isinstance(error, VideoJobError):
        return  # nothing was paid for, or the job itself failed: nothing to deliver later
    book = Ledger(ledger)
    book.add(
        PendingVideo(
            video_id=video_id,
            output=output,
            base_url=target.base_url,
            provider=target.provider,
            reason=type(error).__name__,
        )
    )
    logger.warning("video %s recorded in %s: `sora-video pending` delivers it once done", video_id, book.location)


def submit(
    args: argparse.Namespace, target: Target, request: VideoRequest, image: PreparedImage | None, profile: Any
) -> str:
    book = Ledger(args.ledger)
    client = client_for(target, profile)
    try:
        submitted = pipeline.submit(client, request, image, request_id=args.request_id, receipts=Receipts())
    finally:
        client.close()
    book.add(
        PendingVideo(
            video_id=submitted.video_id,
            output=args.output,
            model=request.model,
            seconds=request.seconds,
            size=request.size,
            base_url=target.base_url,
            provider=target.provider,
        )
    )
    return submitted.video_id


def status(args: argparse.Namespace, target: Target, profile: Any) -> str:
    client = client_for(target, profile)
    try:
        video, _ = client.retrieve(args.video_id)
    finally:
        client.close()
    return json.dumps(status_dict(video), indent=2)


def collect(args: argparse.Namespace, target: Target, reporter: Reporter, profile: Any) -> str:
    client = client_for(target, profile)
    try:
        delivered = pipeline.collect(client, args.video_id, args.output)
    finally:
        client.close()
    Ledger(args.ledger).remove(args.video_id)  # delivered: `pending` must not deliver it again
    reporter.delivered(
        uri=delivered.uri,
        size=delivered.bytes,
        seconds=delivered.seconds,
        resolution=delivered.size,
        model=delivered.model,
        video_id=delivered.video_id,
    )
    return delivered.uri


def pending(book: Ledger) -> list[dict[str, Any]]:
    """Sweep the ledger with the core: each record with the server and key it was made with."""
    from ..core.providers import resolve_profile

    clients: dict[tuple[str | None, str | None], VideosClient] = {}

    def deliver(record: PendingVideo) -> str:
        route = (record.base_url, record.provider)
        if route not in clients:
            emulator = services.is_emulator_url(record.base_url)
            target = Target(record.base_url, record.provider, record.api_key_secret, emulator=emulator)
            profile = resolve_profile(record.provider, record.base_url or "https://api.openai.com/v1")
            clients[route] = client_for(target, profile)
        return pipeline.collect(clients[route], record.video_id, record.output).uri

    try:
        return [sweep_record(record, book, deliver) for record in book.pending()]
    finally:
        for client in clients.values():
            client.close()
