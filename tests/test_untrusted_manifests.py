"""Issue 22, the manifest and artifact side: a hostile manifest can place no file, pay for no refused row,
and inject nothing into the artifacts a person reads.

Every batch runs the real flow against the emulator (counting its creates) and, for S3, moto;
the summaries are parsed with markdown-it (CommonMark with tables) as a renderer would, and
looked at in Chromium through the Prefect UI (the last test). Images are real, cut files.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from PIL import Image

from sora_tasks.blocks import VideosApi
from sora_tasks.core.api.settings import ApiSettings
from sora_tasks.core.errors import BatchFailedError, InvalidRequestError
from sora_tasks.core.jobs.manifest import ERROR_CHARS, load_manifest
from sora_tasks.core.media.images import MAX_IMAGE_BYTES, prepare_image
from sora_tasks.core.storage.records import sora_home
from sora_tasks.core.summary import batch_markdown, video_markdown
from sora_tasks.core.text import link_target, markdown_text, shorten
from sora_tasks.flows.batch import generate_videos

from .browser import chromium, missing_reason
from .media import api_requests
from .prefect_api import prefect_api

PROJECT = Path(__file__).resolve().parent.parent
SETTINGS = ApiSettings(provider="openai")
MEGABYTE = 1_048_576
JAVASCRIPT_OUTPUT = "a](javascript:alert(1)).mp4"
# A value that, pasted into a table cell unescaped, ends the table and adds a heading.
TABLE_BREAKER = "1280x720 |\n\n## Owned\n\n| x | y |\n|---|---|\n| z"
SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.\-]*):")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def api_for(emulator: Any) -> VideosApi:
    return VideosApi(base_url=emulator.base_url, poll_interval=0.1)


def created_prompts(emulator: Any) -> set[str]:
    """The prompts of the jobs the emulator made: what was paid for."""
    return {job.prompt for job in emulator.state.listing()}


def rendered(markdown: str) -> dict[str, Any]:
    """What a CommonMark renderer with tables makes of ``markdown``: table rows, links, images, headings."""
    parser = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    # markdown-it drops javascript:/data: links itself; a renderer that keeps them (Prefect's
    # UIs keep link schemes) is what the summary must be safe in, so this one keeps every link.
    parser.validateLink = lambda url: True  # type: ignore[method-assign]
    tokens = parser.parse(markdown)
    inline = [child for token in tokens if token.type == "inline" for child in token.children or []]
    body_rows = 0
    in_body = False
    for token in tokens:
        in_body = (in_body or token.type == "tbody_open") and token.type != "tbody_close"
        body_rows += in_body and token.type == "tr_open"
    return {
        "tables": sum(1 for token in tokens if token.type == "table_open"),
        "rows": body_rows,
        "links": [str(child.attrs.get("href", "")) for child in inline if child.type == "link_open"],
        "images": [str(child.attrs.get("src", "")) for child in inline if child.type == "image"],
        "headings": [tokens[index + 1].content for index, t in enumerate(tokens) if t.type == "heading_open"],
        "html": [token.content for token in [*tokens, *inline] if token.type in ("html_block", "html_inline")],
    }


def assert_only_safe_links(targets: list[str]) -> None:
    """Every link or image goes to http(s) or to a path without a scheme: no javascript:, data:, file:."""
    for target in targets:
        scheme = SCHEME.match(target)
        assert scheme is None or scheme.group(1).lower() in ("http", "https"), target
        assert "javascript:" not in target.lower(), target


def run_artifacts(flow_run_id: Any) -> list[dict[str, Any]]:
    found = prefect_api(
        "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}, "limit": 50}
    )
    return found  # type: ignore[no-any-return]


def hostile_rows(tag: str) -> list[dict[str, Any]]:
    """A manifest as an attacker writes it: (row, how it must end). The paths are relative to the prefix."""
    return [
        {"prompt": f"good {tag}", "output": "good.mp4"},
        {"prompt": f"javascript {tag}", "output": JAVASCRIPT_OUTPUT},  # a legal file name: delivered, never a link
        {"prompt": f"table {tag}", "resolution": TABLE_BREAKER},
        {"prompt": f"nul {tag}", "output": "x\u0000.mp4"},
        {"prompt": f"newline {tag}", "output": "x\n.mp4"},
        {"prompt": f"duplicate {tag}", "output": "good.mp4"},
        {"prompt": f"preview {tag}", "output": "good.thumbnail.webp"},
        {"prompt": f"state {tag}", "output": ".prefect-sora/receipts/x.mp4"},
        {"prompt": f"big fit {tag}", "fit": "c" * MEGABYTE},
        {"prompt": f"big output {tag}", "output": "o" * MEGABYTE + ".mp4"},
        {"prompt": f"heading {tag}", "output": "## Owned |.mp4"},  # a legal name too
    ]


# Row number -> the start of its error: every other row is delivered.
HOSTILE_ERRORS = {
    3: "resolution '1280x720 |\\n\\n## Owned",  # its repr: the newlines as text
    4: "output must not contain control characters (NUL, newlines, ...): U+0000 at character 1",
    5: "output must not contain control characters (NUL, newlines, ...): U+000A at character 1",
    6: "output ",  # the rest names row 1 (checked below)
    7: "output ",
    8: "output ",
    9: "fit must be one of cover, contain, stretch, got 'cccc",
    10: "output is 1,048,580 bytes long; paths may have 4,096",
}
PAID_ROWS = (1, 2, 11)


def test_a_hostile_manifest_pays_only_for_its_valid_rows_and_writes_only_inside_the_prefix(  # type: ignore[no-untyped-def]
    emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tag = uuid.uuid4().hex[:8]
    prefix = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    prefix.mkdir()
    elsewhere.mkdir()
    rows = hostile_rows(tag)
    # A symlink inside the output folder, as a shared folder may hold one: a row through it is refused.
    (prefix / "linked").symlink_to(elsewhere, target_is_directory=True)
    rows.append({"prompt": f"link {tag}", "output": "linked/x.mp4"})
    manifest = write_jsonl(tmp_path / "in" / "hostile.jsonl", rows)

    state = generate_videos(manifest=manifest, output_prefix=str(prefix), api=api_for(emulator), return_state=True)
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BatchFailedError), error
    outcomes = {row["row"]: row for row in error.rows}

    # Paid: exactly the valid rows, one job each; nothing for any refused row.
    assert emulator.state.jobs_created == len(PAID_ROWS) == emulator.state.count("create")
    assert created_prompts(emulator) == {rows[number - 1]["prompt"] for number in PAID_ROWS}
    assert [number for number, row in outcomes.items() if row["status"] == "delivered"] == list(PAID_ROWS)
    errors = {number: row["error"] for number, row in outcomes.items() if row["status"] == "invalid"}
    assert sorted(errors) == [*HOSTILE_ERRORS, 12]
    for number, start in HOSTILE_ERRORS.items():
        assert errors[number].startswith(start), (number, errors[number][:300])
    assert "which row 1 writes (its video)" in errors[6]
    assert f"{str(prefix / 'good.thumbnail.webp')!r}, which row 1 writes (its thumbnail)" in errors[7]
    assert "inside a .prefect-sora folder" in errors[8]
    assert "goes through the symlink" in errors[12] and "linked" in errors[12]
    # A megabyte of input comes back as a short text with a marker.
    for number in (9, 10):
        assert len(errors[number]) < 400, (number, len(errors[number]))
    assert errors[9].endswith("characters, cut)")
    assert all(len(error) <= ERROR_CHARS + 40 for error in errors.values())

    # Files: the delivered rows' videos and previews under the prefix, nothing through the link or elsewhere.
    written = sorted(str(path.relative_to(prefix)) for path in prefix.rglob("*") if path.is_file())
    names = ("good", "a](javascript:alert(1))", "## Owned |")
    assert written == sorted(
        f"{name}{end}" for name in names for end in (".mp4", ".spritesheet.jpg", ".thumbnail.webp")
    )
    assert list(elsewhere.iterdir()) == []

    # The summary: one table row per manifest row, no javascript: link, no heading but its own.
    artifacts = run_artifacts(state.state_details.flow_run_id)
    [summary] = [artifact for artifact in artifacts if artifact["key"] == "generate-videos"]
    seen = rendered(summary["data"])
    assert (seen["tables"], seen["rows"]) == (1, len(rows)), summary["data"][:3000]
    assert len(seen["headings"]) == 1 and seen["headings"][0].startswith("Batch"), seen["headings"]
    assert_only_safe_links(seen["links"] + seen["images"])
    assert len(seen["links"]) == len(PAID_ROWS) and seen["html"] == []
    assert len(summary["data"]) < 30_000  # two megabytes of hostile values do not reach the page
    for artifact in artifacts:  # every artifact of the run, descriptions too
        assert len(json.dumps(artifact["data"])) < 60_000 and "javascript:" not in str(artifact["description"])
        if artifact["type"] == "markdown":
            assert_only_safe_links(rendered(artifact["data"])["links"])
    # Log lines: each bad row once, short.
    logged = [record.getMessage() for record in caplog.records if record.name == "prefect.flow_runs"]
    assert all(len(line) < 2 * ERROR_CHARS for line in logged), max(map(len, logged))


def test_at_a_bucket_root_rows_cannot_reach_the_receipts_or_each_others_files(  # type: ignore[no-untyped-def]
    emulator, s3, bucket: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    rows = [
        {"prompt": f"good {tag}", "output": "ok/{video_id}.mp4"},
        {"prompt": f"receipts {tag}", "output": ".prefect-sora/receipts/planted.json"},
        {"prompt": f"ledger {tag}", "output": f"s3://{bucket}/.prefect-sora/pending/x.mp4"},
        {"prompt": f"fixed {tag}", "output": "ok/x.mp4"},
        {"prompt": f"same {tag}", "output": "ok/x.mp4"},
        {"prompt": f"its sheet {tag}", "output": "ok/x.spritesheet.jpg"},
        {"prompt": f"other extension {tag}", "output": "ok/x.mov"},  # same previews as ok/x.mp4
        {"prompt": f"separator {tag}", "output": "ok/x\u2028y.mp4"},
    ]
    s3.put_object(Bucket=bucket, Key="in/rows.jsonl", Body="\n".join(json.dumps(row) for row in rows).encode())
    with pytest.raises(BatchFailedError) as raised:
        generate_videos(manifest=f"s3://{bucket}/in/rows.jsonl", output_prefix=f"s3://{bucket}", api=api_for(emulator))
    outcomes = raised.value.rows
    assert [row["status"] for row in outcomes] == ["delivered", *["invalid"] * 2, "delivered", *["invalid"] * 4]
    assert emulator.state.jobs_created == 2 and created_prompts(emulator) == {f"good {tag}", f"fixed {tag}"}
    errors = [row.get("error", "") for row in outcomes]
    assert "inside a .prefect-sora folder" in errors[1] and "inside a .prefect-sora folder" in errors[2]
    assert "which row 4 writes (its video)" in errors[4]
    assert "which row 4 writes (its spritesheet)" in errors[5]
    assert "its thumbnail would overwrite" in errors[6] and "which row 4 writes (its thumbnail)" in errors[6]
    assert "U+2028" in errors[7]
    # The bucket's state holds receipts only: no video, nothing planted.
    state = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=".prefect-sora/").get("Contents", [])]
    assert state and all(key.startswith(".prefect-sora/receipts/") and key.endswith(".json") for key in state)
    assert not any("planted" in key for key in state)
    # A run's own state location and $SORA_HOME are off limits too, whatever they are called.
    given = [{"prompt": "a", "output": "state/x.mp4"}, {"prompt": "b", "output": "videos/x.mp4"}]
    s3.put_object(Bucket=bucket, Key="in/state.jsonl", Body="\n".join(json.dumps(row) for row in given).encode())
    valid, invalid = load_manifest(
        f"s3://{bucket}/in/state.jsonl", output_prefix=f"s3://{bucket}", state=f"s3://{bucket}/state", client=s3
    )
    assert [row.number for row in valid] == [2] and "where this run keeps its receipts" in invalid[0].error
    home = write_jsonl(tmp_path / "home.jsonl", [{"prompt": "c", "output": f"{sora_home().name}/receipts/x.mp4"}])
    [refused] = load_manifest(home, output_prefix=str(sora_home().parent), settings=SETTINGS)[1]
    assert "where this run keeps its receipts" in refused.error


def test_outputs_with_the_jobs_id_never_collide_and_the_first_row_keeps_a_name(tmp_path: Path) -> None:
    manifest = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"prompt": "a"},  # {video_id}.mp4: one name per job
            {"prompt": "b"},
            {"prompt": "c", "output": "day/{video_id}.mp4"},
            {"prompt": "d", "output": "day/x.spritesheet.jpg"},  # first: keeps it
            {"prompt": "e", "output": "day/x.mp4"},  # its spritesheet would overwrite row 4's video
            {"prompt": "f", "output": "day/{model}.mp4"},  # fixed per model
            {"prompt": "g", "output": "day/{model}.mp4", "model": "sora-2-pro"},
            {"prompt": "h", "output": "day/{model}.mp4"},
        ],
    )
    valid, invalid = load_manifest(manifest, output_prefix=str(tmp_path / "out"), settings=SETTINGS)
    assert [row.number for row in valid] == [1, 2, 3, 4, 6, 7]
    assert [row.number for row in invalid] == [5, 8]
    assert "its spritesheet would overwrite" in invalid[0].error and "row 4 writes (its video)" in invalid[0].error
    assert "row 6 writes (its video)" in invalid[1].error
    # CSV rows hold NULs and newlines as easily (Python's csv reads them): refused the same way.
    table = tmp_path / "rows.csv"
    table.write_text('prompt,output\nok,x.mp4\nnul,"a\x00.mp4"\nbreak,"a\n.mp4"\n', newline="")
    valid, invalid = load_manifest(str(table), output_prefix=str(tmp_path / "out"), settings=SETTINGS)
    assert [row.number for row in valid] == [1]
    assert [row.error.split(":")[0] for row in invalid] == [
        "output must not contain control characters (NUL, newlines, ...)"
    ] * 2


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_manifest_that_is_not_utf8_is_refused_by_its_line_alone(  # type: ignore[no-untyped-def]
    where: str, emulator, s3, bucket: str, tmp_path: Path
) -> None:
    secret = f"confidential-{uuid.uuid4().hex}"
    body = (json.dumps({"prompt": f"{secret} one"}) + "\n" + json.dumps({"prompt": "two"}) + "\n").encode()
    body += '{"prompt": "caf\xe9 '.encode("latin-1") + secret.encode() * 1000 + b'"}\n'
    if where == "local":
        manifest = str(tmp_path / "latin1.jsonl")
        Path(manifest).write_bytes(body)
    else:
        s3.put_object(Bucket=bucket, Key="in/latin1.jsonl", Body=body)
        manifest = f"s3://{bucket}/in/latin1.jsonl"
    state = generate_videos(
        manifest=manifest, output_prefix=str(tmp_path / "o"), api=api_for(emulator), return_state=True
    )
    assert state.is_failed() and state.message is not None
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InvalidRequestError)
    assert str(error) == f"manifest {manifest}: line 3 is not UTF-8 text (byte 16 of the line); save it as UTF-8"
    # Nothing of the content: not in the message, the state, nor a chained decoder error.
    assert secret not in state.message and "caf" not in state.message
    assert api_requests(emulator) == []
    # Raised as it is, without the decoder's error (its arguments hold every byte) chained to it.
    with pytest.raises(InvalidRequestError) as raised:
        load_manifest(manifest, settings=SETTINGS, client=s3)
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def encoded_noise(fmt: str, size: tuple[int, int] = (1280, 720)) -> bytes:
    """A photo-like image (noise compresses as badly as a photo) at ``size``, upright, RGB."""
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue()


TRUNCATED = {
    # At the target size, upright, RGB: the inputs that used to be sent byte for byte.
    "jpeg-half": ("JPEG", 0.5),
    "png-half": ("PNG", 0.5),
    "png-without-its-end": ("PNG", -12),  # every pixel there, IEND gone: Pillow's load alone accepts it
}


@pytest.mark.parametrize("case", sorted(TRUNCATED))
def test_a_truncated_image_at_the_target_size_is_refused_before_any_request(  # type: ignore[no-untyped-def]
    case: str, emulator, tmp_path: Path
) -> None:
    fmt, keep = TRUNCATED[case]
    whole = encoded_noise(fmt)
    data = whole[:keep] if isinstance(keep, int) else whole[: int(len(whole) * keep)]
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data)
    with pytest.raises(InvalidRequestError, match=r"could not be decoded \(truncated or corrupt\)"):
        prepare_image(str(path), "1280x720")
    assert prepare_image(whole, "1280x720").unchanged  # the whole file still goes through as it is

    # The CLI: invalid input, exit 2, and indeed nothing sent.
    done = subprocess.run(
        [sys.executable, "-m", "sora_tasks.cli", "--image", str(path), "--prompt", "x", "--output", "x.mp4"],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENAI_BASE_URL": emulator.base_url},
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "invalid input (nothing was sent): image could not be decoded" in done.stderr
    # A batch row with it: invalid, nothing paid for it; the row beside it is made.
    manifest = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"cut {case}", "image": path.name}, {"prompt": case}])
    with pytest.raises(BatchFailedError) as raised:
        generate_videos(manifest=manifest, output_prefix=str(tmp_path / "out"), api=api_for(emulator))
    assert [row["status"] for row in raised.value.rows] == ["invalid", "delivered"]
    assert "could not be decoded" in raised.value.rows[0]["error"]
    assert emulator.state.jobs_created == 1 and created_prompts(emulator) == {case}
    assert [record.endpoint for record in api_requests(emulator)].count("create") == 1


def test_image_reads_stop_at_the_byte_limit(s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A sparse file one byte over the default limit: refused having read at most limit + 1 bytes.
    big = tmp_path / "big.png"
    with big.open("wb") as file:
        file.truncate(MAX_IMAGE_BYTES + 1)
    with pytest.raises(InvalidRequestError, match=f"limit of {MAX_IMAGE_BYTES:,} bytes"):
        prepare_image(str(big), "1280x720")
    small = encoded_noise("PNG")
    with pytest.raises(InvalidRequestError, match=r"limit of 1,000 bytes \(max_bytes\)"):
        prepare_image(small, "1280x720", max_bytes=1000)
    s3.put_object(Bucket=bucket, Key="refs/a.png", Body=small)
    with pytest.raises(InvalidRequestError, match=f"is {len(small):,} bytes; the limit is 1,000 bytes"):
        prepare_image(f"s3://{bucket}/refs/a.png", "1280x720", max_bytes=1000)
    assert prepare_image(f"s3://{bucket}/refs/a.png", "1280x720").unchanged


@pytest.mark.parametrize(
    "value",
    [
        JAVASCRIPT_OUTPUT,
        TABLE_BREAKER,
        "![x](javascript:alert(1))",
        "<img src=x onerror=alert(1)>",
        "[click](data:text/html;base64,PHNjcmlwdD4=)",
        "`code` | ~~gone~~ **bold** _em_ #1 1. item",
        "line\r\nbreak\u2028and\u0085more\x00nul",
    ],
)
def test_any_value_in_any_cell_stays_literal_text(value: str) -> None:
    rows = [
        {"row": 1, "status": "delivered", "how": value, "duration": 4, "cost_usd": 0.4, "video_id": value,
         "uri": value, "thumbnail_uri": value, "model": value, "code": value},
        {"row": 2, "status": "failed", "code": value, "video_id": value, "error": value, "model": value},
        {"row": 3, "status": "invalid", "code": "invalid_row", "error": value},
    ]  # fmt: skip
    for presign in (lambda uri: uri, lambda uri: f"javascript:{uri}", lambda uri: "https://x/y"):
        seen = rendered(batch_markdown(rows, manifest=value, presign=presign))
        assert (seen["tables"], seen["rows"], seen["html"]) == (1, 3, [])
        assert len(seen["headings"]) == 1
        assert_only_safe_links(seen["links"] + seen["images"])
    result = {"video_id": value, "uri": value, "model": value, "resolution": value, "duration": 4, "bytes": 10,
              "how": value, "thumbnail_uri": value, "sha256": value}  # fmt: skip
    urls = {"video": f"javascript:{value}", "thumbnail": value}
    seen = rendered(video_markdown(result, urls=urls, cost_usd=None, timings={value: 1.0}))
    assert seen["tables"] == 2 and seen["html"] == [] and len(seen["headings"]) == 1
    assert_only_safe_links(seen["links"] + seen["images"])


def test_links_only_to_http_and_file_paths_and_long_values_cut_with_a_marker() -> None:
    assert link_target("https://b.s3.amazonaws.com/k.mp4?X-Amz-Signature=ab%2F&X-Amz-Expires=60")
    assert link_target("http://127.0.0.1:9000/b/k.mp4") == "http://127.0.0.1:9000/b/k.mp4"
    for refused in (
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "vbscript:msgbox",
        "data:text/html,<script>",
        "file:///etc/passwd",
        "s3://bucket/key.mp4",
        "https://x/a)(javascript:alert(1)",
        "https://x/a b",
        "https://x/<script>",
        "//evil.example/x",
        "\\\\evil.example\\x",
        "http:no-host",
    ):
        assert link_target(refused) is None, refused
    # A path stays a link, percent-encoded: nothing in it can close the link or name a scheme.
    assert link_target(f"out/{JAVASCRIPT_OUTPUT}") == "out/a%5D%28javascript%3Aalert%281%29%29.mp4"
    assert shorten("x" * MEGABYTE, 10) == "xxxxxxxxxx… (1,048,576 characters, cut)"
    assert markdown_text("a|b\nc") == "a\\|b c" and markdown_text("video_1a_b") == "video_1a_b"


# The browser run: a real Prefect server and UI, the flow in a process of its own, a hostile manifest on S3.
RUN_HOSTILE_BATCH = """
import json, sys
import boto3
from sora_tasks.blocks import VideosApi
from sora_tasks.flows.batch import generate_videos

base_url, bucket, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
boto3.client("s3").put_object(Bucket=bucket, Key="in/hostile.jsonl", Body="\\n".join(map(json.dumps, rows)).encode())
state = generate_videos(manifest=f"s3://{bucket}/in/hostile.jsonl", output_prefix=f"s3://{bucket}/hostile",
                        api=VideosApi(base_url=base_url, poll_interval=0.1), artifact_key="hostile-batch",
                        return_state=True)
print(json.dumps({"run": str(state.state_details.flow_run_id), "rows": state.result(raise_on_failure=False).rows}))
"""


@pytest.mark.slow
@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_the_prefect_ui_shows_a_hostile_batch_as_text_one_row_per_manifest_row(  # type: ignore[no-untyped-def]
    prefect_server_env: dict[str, str], emulator, s3, bucket: str, tmp_path: Path
) -> None:
    api_url = prefect_server_env["PREFECT_API_URL"]
    ui_url = api_url.removesuffix("/api")
    rows = hostile_rows(uuid.uuid4().hex[:8])
    rows[8]["fit"] = "c" * 50_000  # one argument of a command line holds at most 128 KB
    del rows[9]  # the megabyte output: covered in-process above
    done = subprocess.run(
        [sys.executable, "-c", RUN_HOSTILE_BATCH, emulator.base_url, bucket, json.dumps(rows)],
        env={**os.environ, **prefect_server_env, "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")},
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    delivered = [row for row in run["rows"] if row["status"] == "delivered"]
    assert [row["row"] for row in delivered] == [1, 2, 10] and emulator.state.jobs_created == 3
    [summary] = prefect_api(
        "POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": ["hostile-batch"]}}}, api_url=api_url
    )
    with chromium() as browser:
        for ui, base in (("v2", f"{ui_url}/v2"), ("v1", ui_url)):
            page = browser.open(
                f"{base}/artifacts/artifact/{summary['id']}",
                wait_for_text=["hostile-batch", *(row["video_id"] for row in delivered)],
                wait_for_selector="img[alt='row 10']",
                screenshot=tmp_path / f"hostile-{ui}.png",
            )
            table = page.table_with(delivered[0]["video_id"])
            assert table and table[0][:4] == ["row", "thumbnail", "video", "status"], page.describe()
            assert [line[0] for line in table[1:]] == [str(number) for number in range(1, len(rows) + 1)], (
                page.describe()
            )
            assert_only_safe_links(page.links + [image.src for image in page.images])
            assert "Owned" not in " ".join(page.headings), page.headings
            assert "## Owned" in page.text  # shown, as the text it is
