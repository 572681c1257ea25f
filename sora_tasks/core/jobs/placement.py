"""Where a batch's rows may write, checked for every row before any row is paid.

A manifest is data that may come from elsewhere. Besides staying under ``output_prefix``
(:func:`.manifest.check_output_inside`), a row's output must not:

* lie inside the project's own state: any ``.prefect-sora`` folder (receipts, ledger:
  ``s3://BUCKET/.prefect-sora/receipts`` is where a bucket's receipts go, so an output
  prefix at a bucket's root would otherwise reach them), the run's ``state`` location,
  the receipts folder under ``$SORA_HOME``, or the ledger;
* go through a symlink inside the output folder (the file would land wherever the link
  points; the prefix itself may be one, as ``/tmp`` is on macOS);
* be a file another row writes: its video, or one of its previews (``x.mp4`` also
  writes ``x.thumbnail.webp``/``.png``/``.jpg`` and ``x.spritesheet.jpg``). The earlier
  row keeps the name and the later one is refused. An output holding ``{video_id}`` is
  unique per job and never collides.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InvalidRequestError
from ..storage.destinations import preview_outputs, render_template, resolve_destination, split_s3_uri
from ..storage.ledger import default_location as default_ledger
from ..storage.receipts import default_location as default_receipts
from ..storage.records import sora_home
from ..text import shown

STATE_FOLDER_NAME = ".prefect-sora"
# A template field left in place: what a path holds before the server names the job.
_UNKNOWN_ID = "{video_id}"


def state_places(output_prefix: str, state: str | None = None) -> list[str]:
    """Where the project keeps records a batch into ``output_prefix`` could reach: the run's ``state``, the
    receipts it would default to, the ledger.

    The folders themselves, not all of ``$SORA_HOME``: a home set to a project folder
    (``SORA_HOME=/data``) must not make every output under ``/data`` invalid; the default
    home is a ``.prefect-sora`` folder, refused by name anyway.
    """
    places = [state] if state else []
    places += [default_receipts(output_prefix), str(sora_home() / "receipts"), default_ledger()]
    return list(dict.fromkeys(places))


def _fixed_path(output: str, model: str) -> str:
    """``output`` with ``{model}`` and ``{date}`` filled and ``{video_id}`` left; a local one made absolute."""
    rendered = render_template(output, video_id=_UNKNOWN_ID, model=model)
    return rendered if rendered.startswith("s3://") else os.path.abspath(os.path.expanduser(rendered))


def _inside(path: str, place: str) -> bool:
    """``path`` is ``place`` or under it: the same bucket and key prefix, or the same resolved folder."""
    if path.startswith("s3://") or place.startswith("s3://"):
        if not (path.startswith("s3://") and place.startswith("s3://")):
            return False
        (bucket, key), (root_bucket, root_key) = split_s3_uri(path), split_s3_uri(place)
        root_key = root_key.strip("/")
        return bucket == root_bucket and (not root_key or key == root_key or key.startswith(root_key + "/"))
    real, root = os.path.realpath(path), os.path.realpath(os.path.expanduser(place))
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def check_outside_state(output: str, places: Iterable[str], *, model: str) -> None:
    """Refuse an output inside a ``.prefect-sora`` folder or one of ``places`` (see :func:`state_places`)."""
    path = _fixed_path(output, model)
    if path.startswith("s3://"):
        segments = split_s3_uri(path)[1].split("/")
    else:  # as written, and where its links lead
        segments = [*path.split(os.sep), *os.path.realpath(path).split(os.sep)]
    if STATE_FOLDER_NAME in segments:
        raise InvalidRequestError(
            f"output {shown(output)} is inside a {STATE_FOLDER_NAME} folder, where receipts and the ledger live; "
            "write videos elsewhere"
        )
    for place in places:
        if _inside(path, place):
            raise InvalidRequestError(
                f"output {shown(output)} is inside {shown(place)}, where this run keeps its receipts and ledger; "
                "write videos elsewhere"
            )


def check_no_symlinks(output: str, prefix: str, *, model: str) -> None:
    """Refuse a local output under ``prefix`` whose folders or file below the prefix are symlinks.

    Each existing component below the prefix's real folder is looked at without following
    it (``lstat``); the walk stops at the first that does not exist yet, or that holds
    ``{video_id}`` (made when the job is). An output outside the prefix is not walked:
    that is :func:`.manifest.check_output_inside`'s refusal, or what the caller allowed.
    """
    if output.startswith("s3://") or prefix.startswith("s3://"):
        return
    path = _fixed_path(output, model)
    folder = os.path.abspath(os.path.expanduser(prefix or "."))
    real_folder = os.path.realpath(folder)
    below = next(
        (path[len(base) :] for base in (folder, real_folder) if path == base or path.startswith(base + os.sep)),
        None,
    )
    if below is None:
        return
    current = real_folder
    for name in (part for part in below.split(os.sep) if part):
        if _UNKNOWN_ID in name:
            return
        current = os.path.join(current, name)
        if os.path.islink(current):
            raise InvalidRequestError(
                f"output {shown(output)} goes through the symlink {shown(current)} inside output_prefix "
                f"{shown(prefix)}; name the real folder (rows may not write through links)"
            )
        if not os.path.lexists(current):
            return


@dataclass(frozen=True)
class Claim:
    """A file one row writes: its video or one of its previews."""

    row: int
    output: str
    what: str  # "video", "thumbnail" or "spritesheet"


def _same_file_key(uri: str) -> str:
    return uri if uri.startswith("s3://") else os.path.normcase(os.path.realpath(uri))


def files_written(output: str, model: str) -> list[tuple[str, str]] | None:
    """(file, what) for the video and every preview name of ``output``; None when it holds the job's id."""
    first = resolve_destination(output, video_id="video_a", model=model).uri
    if resolve_destination(output, video_id="video_b", model=model).uri != first:
        return None  # {video_id}: a new name per job
    previews = [(uri, variant) for variant, uri in preview_outputs(first)]
    return [(first, "video"), *previews]


def check_unique_outputs(rows: Sequence[tuple[int, str, str]]) -> dict[int, str]:
    """For (number, output, model) rows in manifest order: the error of each row that would write a file an
    earlier row writes (its video or a preview). The earlier row keeps it."""
    claimed: dict[str, Claim] = {}
    refused: dict[int, str] = {}
    for number, output, model in rows:
        files = files_written(output, model)
        if files is None:
            continue
        keyed = [(_same_file_key(uri), uri, what) for uri, what in files]
        clash = next(((uri, what, claimed[key]) for key, uri, what in keyed if key in claimed), None)
        if clash is not None:
            uri, what, earlier = clash
            mine = "it" if what == "video" else f"its {what}"
            theirs = "its video" if earlier.what == "video" else f"its {earlier.what}"
            refused[number] = (
                f"output {shown(output)}: {mine} would overwrite {shown(uri)}, which row {earlier.row} writes "
                f"({theirs}); outputs and their previews (.thumbnail.*, .spritesheet.*) must be unique in a batch"
            )
            continue
        for key, _, what in keyed:
            claimed.setdefault(key, Claim(number, output, what))
    return refused
