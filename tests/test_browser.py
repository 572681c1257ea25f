"""What a person sees: the project's own runs and artifacts in the Prefect UI, in a real headless Chromium.

A real `prefect server start` (UI on, both bundles: the V2 React UI under /v2 that a browser
is sent to by default, the V1 Vue UI at /), a sync run and a batch run against the emulator
delivering to moto S3 with their previews, and Debian's Chromium loading the batch's flow-run
page, the sync run's keyed summary (its thumbnail by a presigned S3 URL), the batch's keyed
summary (a thumbnail per row), its keyed table and the key's history page. Every thumbnail
must show loaded (not a broken image), at its own size. The artifacts are the flows' own,
under their default keys: nothing is made up by the test.
Screenshots go to the test's temporary folder; `SORA_SCREENSHOTS=docs/screenshots` refreshes the
README's pictures with the V2 ones.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image

from .browser import RenderedPage, chromium, missing_reason
from .prefect_api import prefect_api

pytestmark = [
    pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or ""),
    pytest.mark.slow,  # 90-120 s here: a server of its own, two flow runs in a process, two UIs' pages
]

PROJECT = Path(__file__).resolve().parent.parent
# A test run leaves tracked files alone; SORA_SCREENSHOTS=docs/screenshots refreshes the README's pictures.
SCREENSHOTS = Path(os.environ["SORA_SCREENSHOTS"]) if os.environ.get("SORA_SCREENSHOTS") else None
# The flows' default keys: the flow's name when no deployment runs them.
SUMMARY_KEY = "generate-video"
BATCH_KEY = "generate-videos"
TABLE_KEY = "generate-videos-table"
SHOTS = ("flow-run", "artifact-summary", "artifact-batch", "artifact-table", "artifact-key")

# Runs in a process of its own against the real server named by PREFECT_API_URL, as a user's
# script would: one video through the sync flow, then a batch of three, both to S3.
RUN_FLOWS = """
import json, sys
import boto3
from sora_tasks.flows.batch import generate_videos
from sora_tasks.flows.generate import generate_video
from sora_tasks.blocks import VideosApi
from sora_tasks.core.spec import VideoSpec

base_url, bucket, prompt = sys.argv[1:4]
api = VideosApi(base_url=base_url, poll_interval=0.1)
state = generate_video(VideoSpec(prompt=prompt, duration=4), output=f"s3://{bucket}/ui/{{video_id}}.mp4", api=api,
                       return_state=True)
rows = "\\n".join(json.dumps({"prompt": f"{prompt}, shot {n}", "duration": 4 * n}) for n in (1, 2, 3))
boto3.client("s3").put_object(Bucket=bucket, Key="manifests/ui.jsonl", Body=rows.encode())
batch = generate_videos(manifest=f"s3://{bucket}/manifests/ui.jsonl", output_prefix=f"s3://{bucket}/ui-batch",
                        api=api, return_state=True)
print(json.dumps({"video": state.result().model_dump(mode="json"), "video_run": str(state.state_details.flow_run_id),
                  "rows": batch.result(), "batch_run": str(batch.state_details.flow_run_id)}))
"""


def screenshot_dir(ui: str, tmp_path: Path) -> Path:
    if ui == "v2":
        return SCREENSHOTS or tmp_path / "ui-v2"
    return tmp_path / "ui-v1"


def keyed_artifact(key: str, api_url: str) -> dict[str, Any]:
    [artifact] = prefect_api("POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}, api_url=api_url)
    return artifact  # type: ignore[no-any-return]


def test_the_prefect_ui_shows_the_runs_their_keyed_artifacts_and_the_thumbnails(  # type: ignore[no-untyped-def]
    prefect_server_env: dict[str, str], emulator, s3, bucket: str, s3_endpoint: str, unique_prompt: str, tmp_path: Path
) -> None:
    api_url = prefect_server_env["PREFECT_API_URL"]
    ui_url = api_url.removesuffix("/api")
    done = subprocess.run(
        [sys.executable, "-c", RUN_FLOWS, emulator.base_url, bucket, unique_prompt],
        env={**os.environ, **prefect_server_env, "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")},
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    run: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    video, rows = run["video"], run["rows"]
    thumbnail_key = video["thumbnail_uri"].removeprefix(f"s3://{bucket}/")
    thumbnail = Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=thumbnail_key)["Body"].read()))
    assert [row["status"] for row in rows] == ["delivered"] * 3 and all(row["thumbnail_uri"] for row in rows)

    # The server holds the flows' artifacts under their keys, each on its own run.
    summary = keyed_artifact(SUMMARY_KEY, api_url)
    batch = keyed_artifact(BATCH_KEY, api_url)
    table = keyed_artifact(TABLE_KEY, api_url)
    assert (summary["type"], summary["flow_run_id"]) == ("markdown", run["video_run"])
    assert (batch["type"], batch["flow_run_id"]) == ("markdown", run["batch_run"])
    assert (table["type"], table["flow_run_id"]) == ("table", run["batch_run"])
    batch_run = prefect_api("GET", f"/flow_runs/{run['batch_run']}", api_url=api_url)

    settings = prefect_api("GET", "/ui-settings", api_url=ui_url)
    assert settings["api_url"] == api_url and settings["default_ui"] == "v2", settings
    assert set(settings["available_uis"]) == {"v1", "v2"}

    with chromium(viewport=(1400, 900)) as browser:
        for ui, base, open_artifacts_tab in (
            # V2 opens a tab from the URL; V1 keeps ?tab= only once the run has loaded, so click.
            ("v2", f"{ui_url}/v2", {"url_suffix": "?tab=Artifacts", "click": ()}),
            ("v1", ui_url, {"url_suffix": "", "click": 'text="Artifacts"'}),
        ):
            shots = screenshot_dir(ui, tmp_path)

            # The batch's flow-run page, on its Artifacts tab: the run, its state and its keyed artifacts.
            page = browser.open(
                f"{base}/runs/flow-run/{run['batch_run']}{open_artifacts_tab['url_suffix']}",
                click=open_artifacts_tab["click"],
                wait_for_text=[batch_run["name"], BATCH_KEY, TABLE_KEY],
                screenshot=shots / "flow-run.png",
            )
            assert "Completed" in page.text, page.describe()
            assert "generate-videos" in page.text, page.describe()  # the flow's name

            # The sync run's summary: its heading and fields, and the thumbnail image loaded.
            page = browser.open(
                f"{base}/artifacts/artifact/{summary['id']}",
                wait_for_text=[video["video_id"], SUMMARY_KEY],
                wait_for_selector="img[alt^='thumbnail of']",
                screenshot=shots / "artifact-summary.png",
            )
            assert_thumbnails_loaded(page, s3_endpoint, [thumbnail.size])
            fields = page.table_with("model")
            assert ["model", video["model"]] in fields and ["resolution", video["resolution"]] in fields, (
                page.describe()
            )
            assert ["duration", "4 s"] in fields and ["estimated cost", "$0.40"] in fields, page.describe()

            # The batch's summary: the totals and a row per video, each with its thumbnail loaded.
            page = browser.open(
                f"{base}/artifacts/artifact/{batch['id']}",
                wait_for_text=[BATCH_KEY, "3 of 3 delivered", *(row["video_id"] for row in rows)],
                wait_for_selector="img[alt='row 3']",
                screenshot=shots / "artifact-batch.png",
            )
            assert_thumbnails_loaded(page, s3_endpoint, [thumbnail.size] * 3)
            shown = page.table_with(rows[0]["video_id"])
            assert shown and shown[0][:4] == ["row", "thumbnail", "video", "status"], page.describe()
            for row in rows:
                details = f"{row['duration']} s, sora-2, ${row['cost_usd']:.2f}"
                assert [str(row["row"]), "", row["video_id"], "delivered", "", details] in shown[1:], page.describe()

            # The table artifact: every row's fields as text, as they were given.
            page = browser.open(
                f"{base}/artifacts/artifact/{table['id']}",
                wait_for_text=[TABLE_KEY, *(row["uri"] for row in rows)],
                screenshot=shots / "artifact-table.png",
            )
            cells = page.table_with(rows[0]["video_id"])
            assert cells and cells[0][:5] == ["row", "status", "code", "video_id", "uri"], page.describe()
            for row in rows:
                assert any(row["uri"] in line and row["thumbnail_uri"] in line for line in cells[1:]), page.describe()

            # The key's page: the history of that key, this run's summary in it.
            page = browser.open(
                f"{base}/artifacts/key/{quote(SUMMARY_KEY)}",
                wait_for_text=[SUMMARY_KEY, summary["id"][:8]],
                screenshot=shots / "artifact-key.png",
            )

    for name in SHOTS:
        shot = (SCREENSHOTS or tmp_path / "ui-v2") / f"{name}.png"
        with Image.open(shot) as image:
            assert image.width == 1400 and image.height >= 900, (shot, image.size)
        assert shot.stat().st_size < 800_000, shot


def assert_thumbnails_loaded(page: RenderedPage, s3_endpoint: str, sizes: list[tuple[int, int]]) -> None:
    """The page shows these thumbnails from S3, each decoded at its own size: loaded, not broken images."""
    thumbnails = page.images_from(s3_endpoint)
    assert len(thumbnails) == len(sizes), f"{len(thumbnails)} images from {s3_endpoint}\n{page.describe()}"
    for image, size in zip(thumbnails, sizes, strict=True):
        assert image.loaded, f"broken thumbnail {image}\n{page.describe()}"
        assert (image.natural_width, image.natural_height) == size, page.describe()
