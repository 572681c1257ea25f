"""What a person reads at a glance: markdown for one video and for a batch, and artifact keys.

Pure text, no Prefect: the flows hand these to Prefect's artifacts. Images are markdown
``![...](url)`` (Prefect's UI renders markdown artifacts, and shows a table artifact's
cells as text only); for S3 the URL is a presigned GET the caller made. Every value comes
from a manifest, a server or a caller, so each goes through :mod:`.text`: escaped, cut,
and a link only to ``https:``/``http:`` or a file path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import InvalidRequestError
from .text import markdown_code, markdown_image, markdown_inline_image, markdown_link, markdown_text

# Prefect's rule for artifact keys: lowercase letters, numbers and dashes.
_NOT_IN_KEY = re.compile(r"[^a-z0-9]+")
# A batch summary shows this many rows; the table artifact beside it has every row.
SUMMARY_ROWS = 200
# Paid for in this run: a new job, or one made again because the earlier was gone.
PAID_HOWS = ("created", "recreated")


def slug(text: str) -> str:
    """``text`` as an artifact key: lowercase letters, numbers, single dashes ("" when nothing is left)."""
    return _NOT_IN_KEY.sub("-", text.lower()).strip("-")


def artifact_key(given: str | None, *names: str | None) -> str:
    """The key a run's summary is kept under: ``given`` (slugified), else the names joined.

    The flows pass the flow's and (when there is one) the deployment's name, so each
    deployment keeps its own history in the UI.
    """
    if given is not None:
        key = slug(given)
        if not key:
            raise InvalidRequestError(
                f"artifact_key {given!r} has no letter or digit; use lowercase letters, numbers and dashes"
            )
        return key
    return slug("-".join(name for name in names if name)) or "sora-video"


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def _cell(value: Any) -> str:
    """A markdown table cell: literal text on one line (see :func:`.text.markdown_text`)."""
    return markdown_text(value)


def _link(text: str, url: str | None) -> str:
    return markdown_link(text, url)


def video_markdown(
    result: Mapping[str, Any],
    *,
    urls: Mapping[str, str | None],
    cost_usd: float | None,
    timings: Mapping[str, float],
) -> str:
    """One delivered video: its thumbnail, where it is, what it is, what it cost, how long each step took.

    ``result`` has a ``VideoResult``'s fields; ``urls`` maps ``video``, ``thumbnail`` and
    ``spritesheet`` to what a browser can load (presigned or local paths).
    """
    video_id = result["video_id"]
    lines = [f"## Video {markdown_code(video_id)}", ""]
    thumbnail = markdown_image(f"thumbnail of {video_id}", urls.get("thumbnail"))
    if thumbnail:
        lines += [thumbnail, ""]
    else:
        lines += ["*no thumbnail: previews were off, or the server has none*", ""]
    rows: list[tuple[str, str]] = [
        ("video", _link(result["uri"], urls.get("video"))),
        ("video id", markdown_code(video_id)),
        ("model", _cell(result["model"])),
        ("resolution", _cell(result["resolution"])),
        ("duration", f"{result['duration']} s"),
        ("size", human_bytes(int(result["bytes"]))),
        ("estimated cost", "unknown (no price for this model)" if cost_usd is None else f"${cost_usd:.2f}"),
        ("how", _cell(result.get("how", "created"))),
    ]
    if result.get("thumbnail_uri"):
        rows.append(("thumbnail", _link(result["thumbnail_uri"], urls.get("thumbnail"))))
    if result.get("spritesheet_uri"):
        rows.append(("spritesheet", _link(result["spritesheet_uri"], urls.get("spritesheet"))))
    if result.get("expires_at"):
        rows.append(("server copy expires", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(result["expires_at"]))))
    rows.append(("sha256", markdown_code(result["sha256"])))
    if result.get("rejected"):
        rows.append(("rejected before it", _cell(", ".join(result["rejected"]))))
    lines += ["| field | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]
    lines += quality_markdown(result.get("quality"))
    if timings:
        lines += ["| step | time |", "|---|---|"]
        lines += [f"| {_cell(name)} | {seconds:.2f} s |" for name, seconds in timings.items()]
        lines += [f"| **total** | **{sum(timings.values()):.2f} s** |", ""]
    return "\n".join(lines)


def quality_markdown(report: Mapping[str, Any] | None) -> list[str]:
    """The quality check's figures for a delivered video (nothing when it was not checked)."""
    if not report:
        return []
    figures: Mapping[str, Any] = report.get("figures", {})
    failures: Mapping[str, str] = report.get("failures", {})
    verdict = "passed" if report.get("passed") else "**failed** (delivered anyway: quality=warn)"
    rows = [
        ("format", f"{figures.get('codec', '?')} {figures.get('width', '?')}x{figures.get('height', '?')}", "size"),
        (
            "length",
            f"{figures.get('duration', 0):.2f} s, {figures.get('frames', 0)} frames at {figures.get('fps', 0):g} fps",
            "duration",
        ),
        ("black frames", _stretch(figures, "black"), "black"),
        ("frozen picture", _stretch(figures, "frozen"), "frozen"),
        ("audio", str(figures.get("audio", "none")), "silent" if "silent" in failures else "audio"),
    ]
    if figures.get("reference_similarity") is not None:
        rows.append(("first frame vs reference", f"{figures['reference_similarity']:.2f}", "reference"))
    lines = [f"**Quality check: {verdict}**", "", "| check | figure | result |", "|---|---|---|"]
    for name, figure, check in rows:
        result = f"failed: {_cell(failures[check])}" if check in failures else "ok"
        lines.append(f"| {name} | {_cell(figure)} | {result} |")
    return [*lines, ""]


def _stretch(figures: Mapping[str, Any], check: str) -> str:
    share, longest = figures.get(f"{check}_fraction", 0.0), figures.get(f"longest_{check}_seconds", 0.0)
    return f"{100 * share:.0f}% (longest {longest:.1f} s)"


def storyboard_markdown(fields: Mapping[str, Any], shots: Iterable[Mapping[str, Any]]) -> str:
    """A storyboard's one video: its fields, then one line per shot (prompts come from the storyboard file)."""
    rows = "\n".join(f"| {_cell(name)} | {_cell(value)} |" for name, value in fields.items())
    lines = "\n".join(
        f"| {_cell(shot['index'])} | {_cell(shot['duration'])} s | {markdown_code(shot['video_id'])} | "
        f"{_cell(shot['how'])} | {markdown_text(shot['prompt'], 80)} |"
        for shot in shots
    )
    return (
        f"## Storyboard video {markdown_code(fields.get('video_id', ''))}\n\n| field | value |\n|---|---|\n{rows}\n\n"
        f"| shot | duration | video | how | prompt |\n|---|---|---|---|---|\n{lines}\n"
    )


def estimate_markdown(
    manifest: str, *, videos: int, seconds: int, invalid: int, estimate: float, limit: float | None, unpriced: list[str]
) -> str:
    """A batch's cost before anything is submitted (model names come from the manifest's rows)."""
    lines = [
        f"## Batch estimate for {markdown_code(manifest)}",
        "",
        f"- videos to submit: {videos} ({seconds} s of video)",
        f"- invalid rows (not submitted): {invalid}",
        f"- estimated cost: **${estimate:.2f}**" + (f" (limit ${limit:.2f})" if limit is not None else ""),
        "- rows an earlier run already delivered or paid for are not paid again",
    ]
    if unpriced:
        lines.append(f"- no price known for: {', '.join(markdown_text(name) for name in unpriced)} (counted as $0)")
    return "\n".join(lines)


def batch_totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and money for a batch's outcome rows."""
    rows = list(rows)
    delivered = [row for row in rows if row["status"] == "delivered"]
    paid = [
        row
        for row in rows
        if (row["status"] == "delivered" and row.get("how") in PAID_HOWS)
        or (row["status"] == "failed" and row.get("video_id"))
    ]
    return {
        "rows": len(rows),
        "delivered": len(delivered),
        "already_delivered": sum(1 for row in delivered if row.get("how") == "already delivered"),
        "failed": sum(1 for row in rows if row["status"] == "failed"),
        "invalid": sum(1 for row in rows if row["status"] == "invalid"),
        "paid_seconds": sum(int(row.get("duration") or 0) for row in paid),
        "cost_usd": round(sum(float(row.get("cost_usd") or 0.0) for row in rows), 4),
    }


# The table artifact's columns, in this order (the UI shows the first ones without scrolling).
TABLE_COLUMNS = (
    "row",
    "status",
    "code",
    "video_id",
    "uri",
    "thumbnail_uri",
    "spritesheet_uri",
    "how",
    "quality",
    "rejected_uri",
    "cost_usd",
    "duration",
    "model",
    "resolution",
    "prompt",
    "error",
)


def table_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The outcome rows with the columns a person looks for first; every row has every column."""
    rows = list(rows)
    extra = [name for row in rows for name in row if name not in TABLE_COLUMNS]
    columns = [*TABLE_COLUMNS, *dict.fromkeys(extra)]
    return [{name: row.get(name) for name in columns} for row in rows]


def batch_markdown(
    rows: list[dict[str, Any]],
    *,
    manifest: str,
    presign: Callable[[str], str],
    table_key: str | None = None,
    limit: int = SUMMARY_ROWS,
) -> str:
    """A batch at a glance: the totals, then one line per row with its thumbnail, a link, status and error code.

    ``presign`` turns a stored object's URI into what a browser loads. Past ``limit`` rows
    the rest are counted, not shown (a page of thousands of images helps nobody); the
    table artifact ``table_key`` has every row.
    """
    totals = batch_totals(rows)
    lines = [
        f"## Batch {markdown_code(manifest)}",
        "",
        f"**{totals['delivered']} of {totals['rows']} delivered** "
        f"({totals['already_delivered']} already delivered earlier, not paid again) · "
        f"**{totals['failed']} failed** · **{totals['invalid']} skipped** (invalid rows) · "
        f"**{totals['paid_seconds']} s paid** · **estimated ${totals['cost_usd']:.2f}**",
        "",
        "| row | thumbnail | video | status | error code | length, model, cost |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows[:limit]:
        number = _cell(row["row"])
        preview = row.get("thumbnail_uri")
        thumbnail = markdown_image(f"row {row['row']}", presign(preview)) if preview else ""
        uri = row.get("uri")
        video = _link(row.get("video_id") or uri or "", presign(uri) if uri else None) if uri else ""
        if not video and row.get("video_id"):
            video = markdown_code(row["video_id"])
        status = str(row["status"]) + (f" ({row['how']})" if row.get("how") and row["how"] != "created" else "")
        cost = row.get("cost_usd")
        details = [
            f"{_cell(row['duration'])} s" if row.get("duration") else "",
            _cell(row.get("model") or ""),
            "" if cost is None else f"${float(cost):.2f}",
        ]
        lines.append(
            f"| {number} | {thumbnail} | {video} | {_cell(status)} | {_cell(row.get('code') or '')} | "
            f"{', '.join(part for part in details if part)} |"
        )
    if len(rows) > limit:
        where = f" in the table artifact {markdown_code(table_key)}" if table_key else ""
        lines += ["", f"*{len(rows) - limit} more rows{where}.*"]
    failed = [row for row in rows[:limit] if row["status"] != "delivered" and row.get("error")]
    if failed:
        lines += ["", "**Errors**", ""]
        lines += [f"- row {_cell(row['row'])}: {_cell(row['error'])}" for row in failed]
    return "\n".join(lines) + "\n"


def takes_markdown(
    takes: Iterable[Mapping[str, Any]],
    *,
    title: str,
    images: Mapping[int, str | None],
    frames: Mapping[int, str | None] | None = None,
    intro: Iterable[str] = (),
) -> str:
    """A review's takes at a glance: one row a take with its thumbnail, length, how it was made and video id.

    ``takes`` have a :class:`~sora_tasks.core.jobs.review.Take`'s fields; ``images`` maps a take's
    number to what a browser loads for its thumbnail (a presigned URL, or the preview's own bytes
    as a ``data:`` image); ``frames`` to its spritesheet's. ``title`` and ``intro`` (paragraphs
    above the table) are markdown the caller built, untrusted parts escaped; a remix's note is
    escaped here.
    """
    lines = [f"## {title}", ""]
    for paragraph in intro:
        lines += [paragraph, ""]
    # Two columns, the details under the thumbnail: the form's dialog is narrow, and the
    # thumbnail is what a person looks at.
    lines += ["| take | thumbnail, length, how it was made, video id |", "|---|---|"]
    for take in takes:
        number = int(take["number"])
        thumbnail = markdown_inline_image(f"take {number}", images.get(number)) or "*no thumbnail*"
        sheet = markdown_link("frames", (frames or {}).get(number))
        if sheet != "frames":
            thumbnail += f" {sheet}"
        made = "take"
        if take.get("remix_of") is not None:
            made = f"remix of take {_cell(take['remix_of'])}: {markdown_text(take['prompt'], 200)}"
        if take.get("how") not in (None, "created"):
            made += f" ({_cell(take['how'])})"
        length = f"{_cell(take.get('duration') or '?')} s, {_cell(take.get('resolution') or '')}"
        lines.append(f"| **{number}** | {thumbnail} {length} · {made} · {markdown_code(take['video_id'])} |")
    return "\n".join(lines) + "\n"
