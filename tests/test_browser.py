"""What a person sees: a finished run and its artifacts in the Prefect UI, in a real headless Chromium.

A real `prefect server start` (UI on, both bundles: the V2 React UI under /v2 that a browser
is sent to by default, the V1 Vue UI at /), a real flow run against the emulator delivering
to moto S3, and Debian's Chromium loading the flow-run page, the artifact pages and the
artifact key page. The markdown artifact shows the thumbnail through a presigned S3 URL; the
page must show it loaded (not a broken image), at the thumbnail's own size.
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
    pytest.mark.slow,  # 75-100 s here: a server of its own, a flow run in a process, two UIs' pages
]

PROJECT = Path(__file__).resolve().parent.parent
# A test run leaves tracked files alone; SORA_SCREENSHOTS=docs/screenshots refreshes the README's pictures.
SCREENSHOTS = Path(os.environ["SORA_SCREENSHOTS"]) if os.environ.get("SORA_SCREENSHOTS") else None
SUMMARY_KEY = "browser-check-summary"
TABLE_KEY = "browser-check-table"

# Runs in a process of its own against the real server named by PREFECT_API_URL: a parent flow
# makes two videos through the sync flow (thumbnails delivered beside them in S3), then leaves
# a keyed markdown summary showing the first thumbnail and a keyed table of both.
RUN_FLOW = """
import json, sys
import boto3
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from sora_tasks.blocks import VideosApi
from sora_tasks.core.spec import VideoSpec
from flows.generate import generate_video

base_url, bucket, prompt, summary_key, table_key = sys.argv[1:6]

@flow(name="browser-check")
def browser_check():
    api = VideosApi(base_url=base_url, poll_interval=0.1)
    videos = [
        generate_video(VideoSpec(prompt=f"{prompt} ({seconds} s)", duration=seconds),
                       output=f"s3://{bucket}/ui/{{video_id}}.mp4", api=api, thumbnail=True)
        for seconds in (4, 8)
    ]
    first = videos[0]
    thumbnail_key = first.thumbnail_uri.removeprefix(f"s3://{bucket}/")
    url = boto3.client("s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": thumbnail_key}, ExpiresIn=3600)
    summary = create_markdown_artifact(
        key=summary_key,
        description=f"Video {first.video_id}",
        markdown=f"## Browser check {first.video_id}\\n\\n![thumbnail of {first.video_id}]({url})\\n\\n"
        "| field | value |\\n|---|---|\\n"
        f"| model | {first.model} |\\n| resolution | {first.resolution} |\\n| duration | {first.duration} s |\\n",
    )
    table = create_table_artifact(
        key=table_key,
        description="Both videos",
        table=[{"video_id": v.video_id, "status": v.status, "duration": v.duration, "resolution": v.resolution,
                "uri": v.uri} for v in videos],
    )
    return {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name, "summary_id": str(summary),
            "table_id": str(table), "thumbnail_key": thumbnail_key, "thumbnail_url": url,
            "videos": [v.model_dump(mode="json") for v in videos]}

print(json.dumps(browser_check()))
"""


def screenshot_dir(ui: str, tmp_path: Path) -> Path:
    if ui == "v2":
        return SCREENSHOTS or tmp_path / "ui-v2"
    return tmp_path / "ui-v1"


def test_the_prefect_ui_shows_a_finished_run_its_artifacts_and_the_thumbnail(  # type: ignore[no-untyped-def]
    prefect_server_env: dict[str, str], emulator, s3, bucket: str, s3_endpoint: str, unique_prompt: str, tmp_path: Path
) -> None:
    api_url = prefect_server_env["PREFECT_API_URL"]
    ui_url = api_url.removesuffix("/api")
    done = subprocess.run(
        [sys.executable, "-c", RUN_FLOW, emulator.base_url, bucket, unique_prompt, SUMMARY_KEY, TABLE_KEY],
        env={**os.environ, **prefect_server_env, "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")},
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    run: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    videos = run["videos"]
    thumbnail = Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=run["thumbnail_key"])["Body"].read()))
    assert run["thumbnail_url"].startswith(s3_endpoint)  # what the page will load: the presigned moto URL

    # The server holds both artifacts under their keys, on this flow run.
    for key, kind in ((SUMMARY_KEY, "markdown"), (TABLE_KEY, "table")):
        [artifact] = prefect_api(
            "POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}, api_url=api_url
        )
        assert (artifact["type"], artifact["flow_run_id"]) == (kind, run["flow_run_id"])

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

            # The flow-run page, on its Artifacts tab: the run, its state and both keyed artifacts.
            page = browser.open(
                f"{base}/runs/flow-run/{run['flow_run_id']}{open_artifacts_tab['url_suffix']}",
                click=open_artifacts_tab["click"],
                wait_for_text=[run["flow_run_name"], SUMMARY_KEY, TABLE_KEY],
                screenshot=shots / "flow-run.png",
            )
            assert "Completed" in page.text, page.describe()
            assert "browser-check" in page.text, page.describe()  # the flow's name

            # The markdown summary: its heading and fields, and the thumbnail image loaded.
            page = browser.open(
                f"{base}/artifacts/artifact/{run['summary_id']}",
                wait_for_text=[f"Browser check {videos[0]['video_id']}", SUMMARY_KEY],
                wait_for_selector="img[alt^='thumbnail of']",
                screenshot=shots / "artifact-summary.png",
            )
            assert_thumbnail_loaded(page, s3_endpoint, thumbnail.size)
            assert ["model", videos[0]["model"]] in page.table_with("model"), page.describe()
            assert ["resolution", videos[0]["resolution"]] in page.table_with("model"), page.describe()

            # The table artifact: a header row and one row per video, every cell as it was given.
            page = browser.open(
                f"{base}/artifacts/artifact/{run['table_id']}",
                wait_for_text=[TABLE_KEY, *(video["uri"] for video in videos)],
                screenshot=shots / "artifact-table.png",
            )
            table = page.table_with(videos[0]["video_id"])
            assert table and table[0] == ["video_id", "status", "duration", "resolution", "uri"], page.describe()
            for video in videos:
                row = [video["video_id"], "completed", str(video["duration"]), video["resolution"], video["uri"]]
                assert row in table[1:], page.describe()

            # The key's page: the history of that key, this run's artifact in it.
            page = browser.open(
                f"{base}/artifacts/key/{quote(TABLE_KEY)}",
                wait_for_text=[TABLE_KEY, run["table_id"][:8], run["flow_run_name"]],
                screenshot=shots / "artifact-key.png",
            )

    for name in ("flow-run", "artifact-summary", "artifact-table", "artifact-key"):
        shot = (SCREENSHOTS or tmp_path / "ui-v2") / f"{name}.png"
        with Image.open(shot) as image:
            assert image.width == 1400 and image.height >= 900, (shot, image.size)
        assert shot.stat().st_size < 500_000, shot


def assert_thumbnail_loaded(page: RenderedPage, s3_endpoint: str, size: tuple[int, int]) -> None:
    """The page shows the thumbnail from S3, decoded at its own size: loaded, not a broken image."""
    thumbnails = page.images_from(s3_endpoint)
    assert thumbnails, f"no image from {s3_endpoint}\n{page.describe()}"
    for image in thumbnails:
        assert image.loaded, f"broken thumbnail {image}\n{page.describe()}"
        assert (image.natural_width, image.natural_height) == size, page.describe()
