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

from sora_tasks.connection import ApiSettings
from sora_tasks.core.ledger import Ledger, PendingVideo
from sora_tasks.core.sweep import summary, sweep_record

from .manual import collect


@flow(name="collect-pending")
def collect_pending(ledger: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Deliver every finished video recorded in ``ledger``; one row per record looked at."""
    logger = get_run_logger()
    book = Ledger(ledger)

    def deliver(record: PendingVideo) -> str:
        settings = ApiSettings(base_url=record.base_url, api_key_secret=record.api_key_secret, provider=record.provider)
        return collect(record.video_id, record.output, settings, record.s3_bucket_block).uri

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
