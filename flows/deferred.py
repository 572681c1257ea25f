"""Async mode: submit now, deliver later, with no flow run held while videos render.

``submit_video(..., ledger=...)`` records each job; ``collect_pending`` (deployed on
a schedule) sweeps the ledger, delivers what finished, reports what failed, and
leaves the rest for the next sweep. A run takes seconds whatever the render time.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from sora_tasks.blocks import VideosApi, load_api, load_bucket
from sora_tasks.core.ledger import Ledger, PendingVideo
from sora_tasks.core.settings import ApiSettings
from sora_tasks.core.sweep import summary, sweep_record

from .delivery import Delivery
from .manual import collect


@flow(name="collect-pending")
def collect_pending(
    ledger: str | None = None, limit: int = 100, api: VideosApi | str | None = None
) -> list[dict[str, Any]]:
    """Deliver every finished video recorded in ``ledger``; one row per record looked at.

    A record made with a saved ``VideosApi`` block is collected through that block; any
    other through ``api`` (a block or its name; None: the record's base URL and provider
    with ``OPENAI_API_KEY``).
    """
    logger = get_run_logger()
    book = Ledger(ledger)
    fallback = load_api(api)
    connections: dict[str, ApiSettings] = {}  # each saved block loaded once per sweep

    def deliver(record: PendingVideo) -> str:
        if record.api_block:
            if record.api_block not in connections:
                connections[record.api_block] = load_api(record.api_block)
            settings = connections[record.api_block]
        elif api is not None:
            settings = fallback
        else:
            settings = fallback.model_copy(update={"base_url": record.base_url, "provider": record.provider})
        # The record's output is already the full path or s3:// URI; a block lends its credentials.
        return collect(record.video_id, Delivery(record.output, load_bucket(record.destination_block)), settings).uri

    rows: list[dict[str, Any]] = []
    for record in book.pending()[:limit]:
        row = sweep_record(record, book, deliver)
        if row["outcome"] == "failed":
            emit_event(
                event="sora.video.failed",
                resource={"prefect.resource.id": f"sora.video.{record.video_id}"},
                payload={"code": row.get("code"), "message": row["detail"]},
            )
        logger.info("%s: %s (%s)", record.video_id, row["outcome"], row["detail"])
        rows.append(row)
    if rows:
        create_table_artifact(table=rows, description=f"collect-pending sweep of {book.location}")
    logger.info("collect-pending: %s", summary(rows) or f"nothing pending in {book.location}")
    return rows
