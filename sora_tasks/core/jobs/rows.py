"""A batch row's outcome record, as the batch, its shards and the spread parent report it.

Below both ``batch`` and ``spread``: the parent reports rows its shards never did. Plain
records with no Prefect in them, so in the core (the flows folder holds a dozen modules).
"""

from __future__ import annotations

from typing import Any

from ..text import shorten
from .manifest import InvalidRow, ManifestRow

# A row's prompt as tables show it: the start, marked when cut.
PROMPT_PREVIEW_CHARS = 60


def row_record(row: ManifestRow, **fields: Any) -> dict[str, Any]:
    return {
        "row": row.number,
        "prompt": shorten(row.request.prompt, PROMPT_PREVIEW_CHARS),
        "model": row.request.model,
        "duration": int(row.request.seconds),
        "resolution": row.request.size,
        **fields,
    }


def invalid_record(bad: InvalidRow) -> dict[str, Any]:
    return {
        "row": bad.number,
        "prompt": shorten(str(bad.fields.get("prompt", "")), PROMPT_PREVIEW_CHARS),
        "status": "invalid",
        "code": "invalid_row",
        "error": bad.error,
    }
