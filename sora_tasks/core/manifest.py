"""Batch manifests: one video per row, as JSON Lines or CSV, local or on S3.

Columns: ``prompt`` (required), ``image``, ``model``, ``duration`` (or ``seconds``),
``resolution`` (or ``size``), ``output``, ``fit``, ``request_id``. Each row is
checked on its own, so one bad row is reported and the others still run.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidRequestError
from .request import FITS, Fit, VideoRequest
from .settings import ApiSettings
from .spec import VideoSpec, build_request
from .storage import S3Client, read_s3_object, validate_output

KNOWN_COLUMNS = (
    "prompt", "image", "model", "duration", "seconds", "resolution", "size", "output", "fit", "request_id", "extra",
)  # fmt: skip


@dataclass(frozen=True)
class ManifestRow:
    number: int
    request: VideoRequest
    output: str
    image: str | None = None
    fit: Fit = "cover"
    request_id: str | None = None


@dataclass(frozen=True)
class InvalidRow:
    number: int
    error: str
    fields: dict[str, Any]


def read_manifest_text(source: str, client: S3Client | None = None) -> str:
    if source.startswith("s3://"):
        return read_s3_object(source, client).decode("utf-8-sig")
    path = Path(source).expanduser()
    if not path.is_file():
        raise InvalidRequestError(f"manifest: no such file: {path}")
    return path.read_text(encoding="utf-8-sig")


def parse_rows(text: str, source: str) -> list[dict[str, Any]]:
    if source.lower().endswith((".csv", ".tsv")):
        dialect = "excel-tab" if source.lower().endswith(".tsv") else "excel"
        return [dict(row) for row in csv.DictReader(io.StringIO(text), dialect=dialect)]
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            rows.append({"__error__": f"line {number} is not JSON: {error.msg}"})
            continue
        rows.append(value if isinstance(value, dict) else {"__error__": f"line {number} is not a JSON object"})
    return rows


def join_output(prefix: str, row_output: str | None) -> str:
    """A row's output: absolute (s3:// or /path) as given, otherwise under ``prefix``."""
    if row_output and (row_output.startswith(("s3://", "/", "~"))):
        return row_output
    name = row_output or "{video_id}.mp4"
    return prefix.rstrip("/") + "/" + name.lstrip("/") if prefix else name


def _extra_fields(value: Any) -> dict[str, Any] | None:
    """The row's extra create fields: an object in JSONL, a JSON object string in CSV."""
    if not value:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise InvalidRequestError(f"extra must be a JSON object, got {value!r}") from error
    if not isinstance(value, dict):
        raise InvalidRequestError(f"extra must be an object of create fields, got {value!r}")
    return value


def validate_row(number: int, fields: dict[str, Any], prefix: str, settings: ApiSettings) -> ManifestRow | InvalidRow:
    if "__error__" in fields:
        return InvalidRow(number, str(fields["__error__"]), {})
    unknown = sorted(set(fields) - set(KNOWN_COLUMNS))
    try:
        if unknown:
            raise InvalidRequestError(f"unknown column(s) {unknown}; known: {', '.join(KNOWN_COLUMNS)}")
        fit = str(fields.get("fit") or "cover")
        if fit not in FITS:
            raise InvalidRequestError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
        spec = VideoSpec(
            prompt=str(fields.get("prompt") or ""),
            model=str(fields["model"]) if fields.get("model") else None,
            duration=fields.get("duration") or fields.get("seconds") or 4,
            resolution=str(fields.get("resolution") or fields.get("size") or "1280x720"),
            fit=fit,
            extra_fields=_extra_fields(fields.get("extra")) or {},
        )
        request = build_request(spec, settings)
        output = join_output(prefix, fields.get("output") or None)
        validate_output(output)
        image = str(fields["image"]) if fields.get("image") else None
        if image and not image.startswith("s3://") and not Path(image).expanduser().is_file():
            raise InvalidRequestError(f"image: no such file: {image}")
    except ValueError as error:
        return InvalidRow(number, str(error), fields)
    return ManifestRow(number, request, output, image, fit, str(fields.get("request_id") or "") or None)


def load_manifest(
    source: str,
    *,
    output_prefix: str = "",
    settings: ApiSettings | None = None,
    client: S3Client | None = None,
) -> tuple[list[ManifestRow], list[InvalidRow]]:
    """Valid rows and invalid ones (with the reason), each checked as ``build_request`` checks a flow's.

    Without ``settings``, rows are checked against OpenAI's models and sizes.
    """
    settings = settings or ApiSettings(provider="openai")
    rows = parse_rows(read_manifest_text(source, client), source)
    if not rows:
        raise InvalidRequestError(f"manifest {source} has no rows")
    valid: list[ManifestRow] = []
    invalid: list[InvalidRow] = []
    for number, fields in enumerate(rows, start=1):
        checked = validate_row(number, fields, output_prefix, settings)
        (valid if isinstance(checked, ManifestRow) else invalid).append(checked)  # type: ignore[arg-type]
    return valid, invalid
