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
from sora_tasks.core.errors import SoraError, TransientError, VideoExpiredError, VideoJobError, VideoNotReadyError
from sora_tasks.core.ledger import Ledger

from .manual import collect


@flow(name="collect-pending")
def collect_pending(ledger: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Deliver every finished video recorded in ``ledger``; one row per record looked at."""
    logger = get_run_logger()
    book = Ledger(ledger)
    rows: list[dict[str, Any]] = []
    for record in book.pending()[:limit]:
        settings = ApiSettings(base_url=record.base_url, api_key_secret=record.api_key_secret, provider=record.provider)
        row: dict[str, Any] = {"video_id": record.video_id, "output": record.output, "reason": record.reason}
        try:
            result = collect(record.video_id, record.output, settings, record.s3_bucket_block)
        except VideoExpiredError as error:
            book.remove(record.video_id)
            row.update(outcome="expired", detail=str(error))
        except VideoNotReadyError as error:
            if error.status == "not_found":
                book.remove(record.video_id)
                row.update(outcome="missing", detail=str(error))
            else:
                row.update(outcome="pending", detail=error.status)
        except VideoJobError as error:
            book.remove(record.video_id)
            row.update(outcome="failed", detail=f"{error.code}: {error.message}")
            emit_event(
                event="sora.video.failed",
                resource={"prefect.resource.id": f"sora.video.{record.video_id}"},
                payload={"code": error.code, "message": error.message},
            )
        except (TransientError, SoraError) as error:
            row.update(outcome="retry", detail=str(error))  # kept: the next sweep tries again
        else:
            book.remove(record.video_id)
            row.update(outcome="delivered", detail=result.uri)
        logger.info("%s: %s (%s)", record.video_id, row["outcome"], row["detail"])
        rows.append(row)
    if rows:
        create_table_artifact(table=rows, description=f"collect-pending sweep of {book.location}")
    return rows
