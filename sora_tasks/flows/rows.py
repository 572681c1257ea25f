"""A batch row's outcome record, as the batch, its shards and the spread parent report it.

Below both ``batch`` and ``spread``: the parent reports rows its shards never did.
"""

from __future__ import annotations

from typing import Any

from sora_tasks.core.jobs.manifest import InvalidRow, ManifestRow


def row_record(row: ManifestRow, **fields: Any) -> dict[str, Any]:
    return {
        "row": row.number,
        "prompt": row.request.prompt[:60],
        "model": row.request.model,
        "duration": int(row.request.seconds),
        "resolution": row.request.size,
        **fields,
    }


def invalid_record(bad: InvalidRow) -> dict[str, Any]:
    return {
        "row": bad.number,
        "prompt": str(bad.fields.get("prompt", ""))[:60],
        "status": "invalid",
        "code": "invalid_row",
        "error": bad.error,
    }
