"""Batch manifests: one video per row, as JSON Lines or CSV, local or on S3.

Columns: ``prompt`` (required), ``image``, ``model``, ``duration`` (or ``seconds``),
``resolution`` (or ``size``), ``output``, ``fit``, ``request_id``. Each row is
checked on its own, so one bad row is reported and the others still run.

A manifest is data that may come from elsewhere, so a row stays inside what the run
was given (each refusal makes that row invalid, never the whole batch):

* ``output`` is under ``output_prefix``: no ``..`` segments, and an absolute path
  (``/...``, ``~...``, a Windows drive) or an ``s3://`` URI only when it lies inside
  the prefix (same bucket, key under the prefix's key; or a path that resolves under
  the prefix's folder). ``allow_outside_prefix=True`` lets rows write anywhere.
* ``image`` comes from the manifest's own folder (an ``s3://`` manifest's folder is
  its key up to the last ``/``) or from a folder or ``s3://`` prefix in
  ``image_roots``. A local image is checked where it resolves, symlinks followed.
  A relative local image is relative to the manifest's folder (for a local
  manifest; beside an ``s3://`` manifest it is relative to the current directory
  and must lie under a local folder in ``image_roots``), and the row carries the
  resolved absolute path.
* ``output`` and ``image`` are strings without control characters (NUL, newlines);
  an output fits the file system's or S3's name lengths, goes through no symlink
  below the prefix, lies in no ``.prefect-sora`` folder nor where the run keeps its
  state, and is no file an earlier row writes, counting previews (see :mod:`.placement`).
* A manifest that is not UTF-8 is refused as a whole, naming the line and nothing of
  its content; every error text is cut (``ERROR_CHARS``) with a marker.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api.request import VideoRequest
from ..api.settings import ApiSettings
from ..errors import InvalidRequestError
from ..media.fit import FITS, Fit
from ..spec import VideoSpec, build_request
from ..storage.destinations import (
    MAX_PATH_BYTES,
    S3Client,
    check_key,
    check_path_text,
    read_s3_object,
    render_template,
    split_s3_uri,
    validate_output,
)
from ..text import shorten, shown
from .placement import check_no_symlinks, check_outside_state, check_unique_outputs, state_places

# An invalid row's error is cut to this many characters (with a marker): it goes into every artifact and log line.
ERROR_CHARS = 1000
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
        data = read_s3_object(source, client)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise InvalidRequestError(f"manifest: no such file: {shorten(str(path))}")
        data = path.read_bytes()
    return decode_manifest(data, source)


def decode_manifest(data: bytes, source: str) -> str:
    """The manifest's text (a leading BOM dropped); bytes that are not UTF-8 are refused by line number.

    Nothing of the content is echoed, and the decoder's error (whose arguments hold every
    byte of the manifest) is not chained: a log line or a traceback shows only the line.
    """
    body = data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = error.start
    line = body.count(b"\n", 0, bad) + 1
    column = bad - body.rfind(b"\n", 0, bad)
    raise InvalidRequestError(
        f"manifest {shorten(source)}: line {line} is not UTF-8 text (byte {column} of the line); save it as UTF-8"
    )


def parse_rows(text: str, source: str) -> list[dict[str, Any]]:
    if source.lower().endswith((".csv", ".tsv")):
        return _csv_rows(text, source)
    rows: list[dict[str, Any]] = []
    # Split on newlines only: str.splitlines also breaks at U+2028 and other separators
    # that JSON allows unescaped inside a string.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            rows.append({"__error__": f"line {number} is not JSON: {error.msg}"})
            continue
        rows.append(value if isinstance(value, dict) else {"__error__": f"line {number} is not a JSON object"})
    return rows


def _csv_rows(text: str, source: str) -> list[dict[str, Any]]:
    dialect = "excel-tab" if source.lower().endswith(".tsv") else "excel"
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    try:
        return [dict(row) for row in reader]
    except csv.Error as error:  # its message names the problem, never the content
        raise InvalidRequestError(f"manifest {shorten(source)}: line {reader.line_num} is not CSV: {error}") from None


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
            raise InvalidRequestError(f"extra must be a JSON object, got {shown(value)}") from error
    if not isinstance(value, dict):
        raise InvalidRequestError(f"extra must be an object of create fields, got {shown(value)}")
    return value


_SEPARATORS = re.compile("|".join(re.escape(sep) for sep in {"/", os.sep, os.altsep or "/"}))
_WINDOWS_ABSOLUTE = re.compile(r"^([A-Za-z]:|\\)")


def _has_dot_segments(text: str) -> bool:
    return ".." in _SEPARATORS.split(text)


def _is_absolute_output(text: str) -> bool:
    """What ``join_output`` keeps as given, and what Windows would: ``s3://``, ``/``, ``~``, ``C:``, ``\\``."""
    return text.startswith(("s3://", "/", "~")) or bool(_WINDOWS_ABSOLUTE.match(text))


def _s3_inside(uri: str, root_bucket: str, root_key: str) -> bool:
    """``uri`` in ``root_bucket`` under ``root_key`` + '/' (an empty key: anywhere in the bucket)."""
    bucket, key = split_s3_uri(uri)
    root_key = root_key.strip("/")
    return bucket == root_bucket and (not root_key or key.startswith(root_key + "/"))


def check_output_inside(row_output: str | None, prefix: str, *, model: str) -> None:
    """Refuse a row's ``output`` that would write outside ``prefix`` (raises ``InvalidRequestError``)."""
    if not row_output:
        return
    leaves = f"output {shown(row_output)} leaves output_prefix {shown(prefix)}"
    if _has_dot_segments(row_output):
        raise InvalidRequestError(f"{leaves} ('..' segments are not allowed)")
    if "{model}" in row_output and _has_dot_segments(render_template(row_output, video_id="v", model=model)):
        raise InvalidRequestError(f"{leaves} (its model {shown(model)} would add '..' segments)")
    if not _is_absolute_output(row_output):
        return  # joined under the prefix
    if row_output.startswith("s3://"):
        if not prefix.startswith("s3://"):
            raise InvalidRequestError(f"{leaves} (an s3:// output when the prefix is a local folder)")
        bucket, key = split_s3_uri(prefix)
        try:
            inside = _s3_inside(row_output, bucket, key)
        except InvalidRequestError as error:
            raise InvalidRequestError(f"output {shown(row_output)}: {error}") from error
        if not inside:
            under = f"s3://{bucket}/{key.strip('/') + '/' if key.strip('/') else ''}"
            raise InvalidRequestError(f"{leaves} (an s3:// output must be under {under})")
        return
    if prefix.startswith("s3://"):
        raise InvalidRequestError(f"{leaves} (a local path when the prefix is on S3)")
    if _WINDOWS_ABSOLUTE.match(row_output) and os.name != "nt":
        raise InvalidRequestError(f"{leaves} (a Windows path is never inside a folder here)")
    # Under the prefix as written (no '..' is left, so as a relative output would be) or
    # where both resolve, symlinks followed (a prefix under /tmp may really be elsewhere).
    as_written = (
        Path(os.path.abspath(os.path.expanduser(prefix))),
        Path(os.path.abspath(os.path.expanduser(row_output))),
    )
    resolved = Path(prefix).expanduser().resolve(), Path(row_output).expanduser().resolve()
    names_the_folder = row_output.endswith(("/", os.sep))
    if not any(
        folder in path.parents or (names_the_folder and path == folder) for folder, path in (as_written, resolved)
    ):
        raise InvalidRequestError(f"{leaves} (an absolute path must lie under {shown(str(as_written[0]))})")


def manifest_folder(source: str) -> str:
    """The folder a manifest's images may come from: ``s3://bucket/key/`` or a resolved local folder."""
    if source.startswith("s3://"):
        bucket, key = split_s3_uri(source)
        folder = key.rpartition("/")[0]
        return f"s3://{bucket}/{folder + '/' if folder else ''}"
    return str(Path(source).expanduser().absolute().parent.resolve())


def check_image_inside(image: str, *, manifest: str | None, image_roots: Sequence[str] = ()) -> str:
    """The image a row may read: a resolved local path or an ``s3://`` URI inside the allowed places.

    The places are the manifest's folder (none when ``manifest`` is None) and ``image_roots``.
    A relative local image is relative to a local manifest's folder, otherwise to the
    current directory. Raises ``InvalidRequestError`` naming the image and the places.
    """
    folder = manifest_folder(manifest) if manifest else None
    places = ([folder] if folder else []) + [str(root) for root in image_roots]

    def outside(detail: str = "") -> InvalidRequestError:
        where = f"the manifest's folder {shown(folder)}" if folder else "the manifest's folder (none given)"
        return InvalidRequestError(
            f"image {shown(image)} is outside {where} and image_roots {shown(list(image_roots))}{detail}"
        )

    if image.startswith("s3://"):
        try:
            check_key(split_s3_uri(image)[1], image)
        except InvalidRequestError as error:
            raise InvalidRequestError(f"image {shown(image)}: {error}") from error
        if not any(_s3_inside(image, *split_s3_uri(place)) for place in places if place.startswith("s3://")):
            raise outside()
        return image
    path = Path(image).expanduser()
    if not path.is_absolute():
        path = (Path(folder) if folder and not folder.startswith("s3://") else Path.cwd()) / path
    resolved = path.resolve()
    roots = [Path(place).expanduser().resolve() for place in places if not place.startswith("s3://")]
    if not any(root in resolved.parents for root in roots):
        raise outside(f" (it resolves to {shown(str(resolved))})" if resolved != path.absolute() else "")
    if not resolved.is_file():
        raise InvalidRequestError(f"image: no such file: {shorten(image)} (looked at {shorten(str(resolved))})")
    return str(resolved)


def check_image_roots(image_roots: Sequence[str]) -> None:
    """Each root is a local folder or an ``s3://bucket[/prefix]``; a bad one fails the whole run."""
    if isinstance(image_roots, str):
        raise InvalidRequestError(f"image_roots must be a list of folders or s3:// prefixes, got {shown(image_roots)}")
    for root in image_roots:
        if not str(root).strip():
            raise InvalidRequestError("image_roots: an empty entry (use '.' for the current directory)")
        if str(root).startswith("s3://"):
            key = split_s3_uri(str(root))[1]
            if key.strip("/"):
                check_key(key.strip("/"), str(root))


def validate_row(
    number: int,
    fields: dict[str, Any],
    prefix: str,
    settings: ApiSettings,
    *,
    manifest: str | None = None,
    allow_outside_prefix: bool = False,
    image_roots: Sequence[str] = (),
    state: Sequence[str] = (),
) -> ManifestRow | InvalidRow:
    """One row, checked; ``manifest`` is where it was read (its folder is where images may come from).

    ``allow_outside_prefix`` lets ``output`` be any path or URI (a symlink under the prefix
    too); ``image_roots`` adds folders or ``s3://`` prefixes images may come from. Without
    ``manifest`` a local image must lie under ``image_roots`` (a relative one: relative to
    the current directory). ``state`` are the places the project keeps its own records
    (see :func:`.placement.state_places`): no output may lie there, allowed or not, and
    none in a ``.prefect-sora`` folder. Error texts are cut to ``ERROR_CHARS``.
    """
    if "__error__" in fields:
        return InvalidRow(number, shorten(str(fields["__error__"]), ERROR_CHARS), {})
    unknown = sorted(set(fields) - set(KNOWN_COLUMNS))
    try:
        if unknown:
            raise InvalidRequestError(f"unknown column(s) {shown(unknown)}; known: {', '.join(KNOWN_COLUMNS)}")
        fit = str(fields.get("fit") or "cover")
        if fit not in FITS:
            raise InvalidRequestError(f"fit must be one of {', '.join(FITS)}, got {shown(fit)}")
        spec = VideoSpec(
            prompt=str(fields.get("prompt") or ""),
            model=str(fields["model"]) if fields.get("model") else None,
            duration=fields.get("duration") or fields.get("seconds") or 4,
            resolution=str(fields.get("resolution") or fields.get("size") or "1280x720"),
            fit=fit,
            extra_fields=_extra_fields(fields.get("extra")) or {},
        )
        request = build_request(spec, settings)
        row_output = _path_field(fields, "output")
        if not allow_outside_prefix:
            check_output_inside(row_output, prefix, model=request.model)
        output = join_output(prefix, row_output)
        validate_output(output)
        if not allow_outside_prefix:  # a row allowed anywhere gains nothing from a link
            check_no_symlinks(output, prefix, model=request.model)
        check_outside_state(output, state, model=request.model)
        image = _path_field(fields, "image")
        if image:
            image = check_image_inside(image, manifest=manifest, image_roots=image_roots)
    except (ValueError, OSError) as error:  # OSError: a path the system refused to look up
        return InvalidRow(number, shorten(str(error), ERROR_CHARS), fields)
    return ManifestRow(number, request, output, image, fit, str(fields.get("request_id") or "") or None)


def _path_field(fields: dict[str, Any], name: str) -> str | None:
    """A row's ``output`` or ``image``: a string without control characters (NUL, newlines), or None if empty."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string (a path or s3:// URI), got {type(value).__name__}")
    if len(value.encode()) > MAX_PATH_BYTES:
        raise InvalidRequestError(f"{name} is {len(value.encode()):,} bytes long; paths may have {MAX_PATH_BYTES:,}")
    return check_path_text(value, name)


def load_manifest(
    source: str,
    *,
    output_prefix: str = "",
    settings: ApiSettings | None = None,
    client: S3Client | None = None,
    allow_outside_prefix: bool = False,
    image_roots: Sequence[str] = (),
    state: str | None = None,
) -> tuple[list[ManifestRow], list[InvalidRow]]:
    """Valid rows and invalid ones (with the reason), every row checked before any is run.

    Each row is checked as ``build_request`` checks a flow's (without ``settings``,
    against OpenAI's models and sizes). A row's ``output`` must stay under
    ``output_prefix`` unless ``allow_outside_prefix``, and never lies in the project's
    state (``state``: where this run keeps receipts; see :mod:`.placement`) or on a file
    an earlier row writes (its video or a preview); its ``image`` must come from the
    manifest's folder or one of ``image_roots`` (local folders or ``s3://`` prefixes).
    See the module docstring. Invalid rows are in manifest order.
    """
    settings = settings or ApiSettings(provider="openai")
    check_image_roots(image_roots)
    rows = parse_rows(read_manifest_text(source, client), source)
    if not rows:
        raise InvalidRequestError(f"manifest {shorten(source)} has no rows")
    places = state_places(output_prefix, state)
    checked = [
        validate_row(
            number,
            fields,
            output_prefix,
            settings,
            manifest=source,
            allow_outside_prefix=allow_outside_prefix,
            image_roots=image_roots,
            state=places,
        )
        for number, fields in enumerate(rows, start=1)
    ]
    valid = [row for row in checked if isinstance(row, ManifestRow)]
    taken = check_unique_outputs([(row.number, row.output, row.request.model) for row in valid])
    fields = dict(enumerate(rows, start=1))
    invalid = [row for row in checked if isinstance(row, InvalidRow)]
    invalid += [InvalidRow(number, shorten(error, ERROR_CHARS), fields[number]) for number, error in taken.items()]
    invalid.sort(key=lambda row: row.number)
    return [row for row in valid if row.number not in taken], invalid
