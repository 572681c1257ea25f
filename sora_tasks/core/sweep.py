"""One ledger record looked at: delivered, still rendering, failed, expired, missing or kept to retry.

The ``collect-pending`` flow and ``sora-video pending`` share this, so a record means the
same thing whichever engine sweeps it. Only a delivered, failed, expired or missing job
leaves the ledger; anything else stays for the next sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import SoraError, VideoExpiredError, VideoJobError, VideoNotReadyError
from .ledger import Ledger, PendingVideo

# Outcomes that end a record's life in the ledger.
FINAL_OUTCOMES = ("delivered", "failed", "expired", "missing")
# Outcomes a caller should treat as a failed delivery (the job is lost or broken).
FAILED_OUTCOMES = ("failed", "expired", "missing")


def sweep_record(record: PendingVideo, ledger: Ledger, deliver: Callable[[PendingVideo], str]) -> dict[str, Any]:
    """Try to deliver one record with ``deliver`` (which returns the stored URI); one outcome row."""
    row: dict[str, Any] = {"video_id": record.video_id, "output": record.output, "reason": record.reason}
    try:
        uri = deliver(record)
    except VideoExpiredError as error:
        row.update(outcome="expired", detail=str(error))
    except VideoNotReadyError as error:
        if error.status == "not_found":
            row.update(outcome="missing", detail=str(error))
        else:
            row.update(outcome="rendering", detail=error.status)
    except VideoJobError as error:
        row.update(outcome="failed", detail=f"{error.code}: {error.message}", code=error.code)
    except SoraError as error:
        row.update(outcome="retry", detail=str(error))  # kept: the next sweep tries again
    else:
        row.update(outcome="delivered", detail=uri)
    if row["outcome"] in FINAL_OUTCOMES:
        ledger.remove(record.video_id)
    return row


def summary(rows: list[dict[str, Any]]) -> str:
    """``2 delivered, 1 still rendering, 0 failed`` — every outcome seen, in a fixed order."""
    names = {"rendering": "still rendering", "retry": "to retry"}
    order = ("delivered", "rendering", "retry", "failed", "expired", "missing")
    counts = {outcome: sum(1 for row in rows if row["outcome"] == outcome) for outcome in order}
    return ", ".join(f"{count} {names.get(outcome, outcome)}" for outcome, count in counts.items() if count)
