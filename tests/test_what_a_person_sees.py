"""Previews, keyed artifacts, assets and the shipped failure automation on a real `prefect server start`.

One process runs a sync video to moto S3 and a batch (one row the emulator's moderation
refuses) against the server, as a user's script would; the test then reads what the
server kept: the keyed summaries, the thumbnails they link (loaded over HTTP like a
browser would), the asset materialization events and the notification the shipped
``sora.video.failed`` automation sent to a webhook block.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from .media import probe_mp4
from .prefect_api import prefect_api

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parent.parent
VIDEO_KEY = "launch-video"
BATCH_KEY = "launch-batch"

# Runs in a process of its own against the real server named by PREFECT_API_URL.
RUN_FLOWS = """
import json, sys
from sora_tasks.flows.batch import generate_videos
from sora_tasks.flows.generate import generate_video
from prefect.runtime import flow_run
from sora_tasks import BatchFailedError
from sora_tasks.blocks import VideosApi
from sora_tasks.core.spec import VideoSpec

base_url, bucket, prompt, video_key, batch_key = sys.argv[1:6]
api = VideosApi(base_url=base_url, poll_interval=0.1)
state = generate_video(
    VideoSpec(prompt=prompt, duration=4, resolution="720x1280"),
    output=f"s3://{bucket}/launch/{{video_id}}.mp4", api=api, artifact_key=video_key, return_state=True,
)
video = state.result()
batch = generate_videos(
    manifest=f"s3://{bucket}/manifests/launch.jsonl", output_prefix=f"s3://{bucket}/batch", api=api,
    artifact_key=batch_key, preview_url_seconds=3600, return_state=True,
)
try:
    rows = batch.result()
except BatchFailedError as error:
    rows = error.rows
print(json.dumps({
    "video": video.model_dump(mode="json"), "video_run": str(state.state_details.flow_run_id),
    "rows": rows, "batch_run": str(batch.state_details.flow_run_id),
}))
"""


class Webhook:
    """A notification endpoint on 127.0.0.1 that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.3)
        return self.received


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


def run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    return done


def events(api_url: str, name: str, until: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """The stored events of that name, once ``until`` holds (the server persists events in batches)."""
    deadline = time.monotonic() + 30
    while True:
        answer = prefect_api(
            "POST", "/events/filter", json={"filter": {"event": {"name": [name]}}, "limit": 50}, api_url=api_url
        )
        if until(answer["events"]) or time.monotonic() > deadline:
            return answer["events"]  # type: ignore[no-any-return]
        time.sleep(0.5)


def artifact(api_url: str, key: str) -> dict[str, Any]:
    [latest] = prefect_api("POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}, api_url=api_url)
    return latest  # type: ignore[no-any-return]


def test_a_sync_run_and_a_batch_leave_previews_keyed_summaries_assets_and_a_failure_notification(  # type: ignore[no-untyped-def]
    prefect_server_env: dict[str, str], emulator, s3, bucket: str, unique_prompt: str, tmp_path: Path, webhook: Webhook
) -> None:
    api_url = prefect_server_env["PREFECT_API_URL"]
    env = {**os.environ, **prefect_server_env, "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    # The shipped failure automation, pointed at a webhook block, applied with the project's helper...
    save_block = (
        "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B; "
        f"B(name='sora-test', url='{webhook.url}', json_data={{'subject': '{{{{subject}}}}', 'body': '{{{{body}}}}'}})"
        ".save('sora-failures', overwrite=True)"
    )
    run(env, sys.executable, "-c", save_block)
    applied = run(
        env, sys.executable, "-m", "sora_tasks.deployments.automations", "--notify", "custom-webhook/sora-failures"
    )
    # Every shipped file (zombie detection and the review notice too); the failure notification among them.
    assert any(line.startswith("sora-video-failed: ") for line in applied.stdout.splitlines()), applied.stdout
    # ... and as shipped, with Prefect's own CLI: accepted, created disabled until a block is chosen.
    as_shipped = run(
        env, str(BIN / "prefect"), "automation", "create", "--from-file", "sora_tasks/automations/video-failed.yaml"
    )
    assert "Created automation 'sora-video-failed'" in as_shipped.stdout
    automations = prefect_api("POST", "/automations/filter", json={}, api_url=api_url)
    assert sorted(a["enabled"] for a in automations if a["name"] == "sora-video-failed") == [False, True]

    emulator.faults.moderation_words = ("forbidden",)
    rows = [{"prompt": f"{unique_prompt} row {n}"} for n in range(2)] + [{"prompt": f"a forbidden {unique_prompt}"}]
    s3.put_object(Bucket=bucket, Key="manifests/launch.jsonl", Body="\n".join(map(json.dumps, rows)).encode())
    done = run(env, sys.executable, "-c", RUN_FLOWS, emulator.base_url, bucket, unique_prompt, VIDEO_KEY, BATCH_KEY)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    video = result["video"]

    # The MP4 in S3, its thumbnail (an image of the video's own 9:16 shape) and spritesheet beside it.
    stem = video["uri"].removeprefix(f"s3://{bucket}/").removesuffix(".mp4")
    assert probe_mp4(s3.get_object(Bucket=bucket, Key=f"{stem}.mp4")["Body"].read()).height == 1280
    with Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=f"{stem}.thumbnail.webp")["Body"].read())) as image:
        assert image.size == (720, 1280)
    assert s3.head_object(Bucket=bucket, Key=f"{stem}.spritesheet.jpg")["ContentType"] == "image/jpeg"
    assert (video["thumbnail_uri"], video["spritesheet_uri"]) == (
        f"s3://{bucket}/{stem}.thumbnail.webp",
        f"s3://{bucket}/{stem}.spritesheet.jpg",
    )

    # The summary, under its key on that run: the thumbnail by a presigned URL that answers 200 with the image.
    summary = artifact(api_url, VIDEO_KEY)
    assert (summary["type"], summary["flow_run_id"]) == ("markdown", result["video_run"])
    [url] = re.findall(rf"!\[thumbnail of {video['video_id']}\]\(([^)]+)\)", summary["data"])
    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(answer.content)).size == (720, 1280)
    for field in (
        "| model | sora\\-2 |",  # escaped (core.text), shown as sora-2
        "| resolution | 720x1280 |",
        "| duration | 4 s |",
        "| estimated cost | $0.40 |",
    ):
        assert field in summary["data"]
    assert f"| video id | `{video['video_id']}` |" in summary["data"] and "| **total** |" in summary["data"]
    assert "X-Amz-Expires=604800" in url  # the default: seven days, SigV4's longest

    # The batch's summary: every row, a thumbnail for each delivered one, the failed row's code, the totals.
    batch = artifact(api_url, BATCH_KEY)
    assert batch["flow_run_id"] == result["batch_run"]
    table = batch["data"]
    assert "**2 of 3 delivered**" in table and "**1 failed**" in table and "**12 s paid**" in table
    delivered = [row for row in result["rows"] if row["status"] == "delivered"]
    assert len(delivered) == 2
    for row in result["rows"]:
        line = next(line for line in table.splitlines() if line.startswith(f"| {row['row']} |"))
        if row["status"] == "delivered":
            [thumbnail] = re.findall(r"!\[row \d+\]\(([^)]+)\)", line)
            assert "X-Amz-Expires=3600" in thumbnail and httpx.get(thumbnail).status_code == 200
            assert f"[{row['video_id']}](" in line
        else:
            assert "| failed |" in line and "| moderation_blocked |" in line
    table_rows = json.loads(artifact(api_url, f"{BATCH_KEY}-table")["data"])
    assert [row["row"] for row in table_rows] == [1, 2, 3]

    # Assets: every stored object materialized, named by its URI; lineage manifest -> video -> previews.
    delivered_uris = {video["uri"], video["thumbnail_uri"], video["spritesheet_uri"]}
    delivered_uris |= {row[name] for row in delivered for name in ("uri", "thumbnail_uri", "spritesheet_uri")}
    materialized = {
        event["resource"]["prefect.resource.id"]: event
        for event in events(
            api_url,
            "prefect.asset.materialization.succeeded",
            until=lambda found: delivered_uris <= {event["resource"]["prefect.resource.id"] for event in found},
        )
    }
    assert video["uri"] in materialized and video["thumbnail_uri"] in materialized
    assert materialized[video["uri"]]["payload"]["video_id"] == video["video_id"]
    assert materialized[video["uri"]]["payload"]["model"] == "sora-2"
    thumbnail_upstream = [
        r["prefect.resource.id"]
        for r in materialized[video["thumbnail_uri"]]["related"]
        if r["prefect.resource.role"] == "asset"
    ]
    assert thumbnail_upstream == [video["uri"]]
    manifest = f"s3://{bucket}/manifests/launch.jsonl"
    for row in delivered:
        roles = {(r["prefect.resource.role"], r["prefect.resource.id"]) for r in materialized[row["uri"]]["related"]}
        assert ("asset", manifest) in roles and ("flow-run", f"prefect.flow-run.{result['batch_run']}") in roles
        assert row["thumbnail_uri"] in materialized and row["spritesheet_uri"] in materialized
    assert len(materialized) == 3 * 3  # three objects for each of the three videos
    referenced = events(api_url, "prefect.asset.referenced", until=bool)
    assert [event["resource"]["prefect.resource.id"] for event in referenced] == [manifest]

    # The failed row: one sora.video.failed with its flow run, and the shipped automation's notification.
    [failed] = [row for row in result["rows"] if row["status"] == "failed"]
    [notice] = webhook.wait_for(1)
    assert notice["subject"] == f"Sora video {failed['video_id']} failed: moderation_blocked"
    assert f"Video {failed['video_id']} failed (moderation_blocked)" in notice["body"]
    batch_run = prefect_api("GET", f"/flow_runs/{result['batch_run']}", api_url=api_url)
    assert f"Flow run: {batch_run['name']} ({result['batch_run']})" in notice["body"]
