"""Servers, ledgers and receipts that lie: nothing they say places a file, picks a server for the key,
or makes a paid job vanish unrecorded.

A hostile Videos API written here (tests/hostile.py: ids with ``..`` and ``/``, fake and
endless MP4s, a 401) and records planted on disk and in moto S3, driven through the real
CLI, the real SDK and the Prefect flows. docs/security.md lists each case with its test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sora_tasks.core.api.client import VideosClient
from sora_tasks.core.api.request import VideoRequest
from sora_tasks.core.api.settings import ApiSettings
from sora_tasks.core.errors import DownloadError, TransientError, UntrustedAnswerError
from sora_tasks.core.storage.ledger import Ledger, PendingVideo
from sora_tasks.core.storage.receipts import Receipt, Receipts
from sora_tasks.flows.batch import generate_videos
from sora_tasks.flows.deferred import collect_pending
from sora_tasks.flows.generate import generate_video

from .apis import api_for
from .conftest import SENTINEL_API_KEY
from .hostile import HostileServer, hostile_server, real_mp4
from .media import api_requests
from .waiting import wait_until_completed

HOSTILE_IDS = ["../../escaped", "video_x/../../y", "video x", "video_\n", "v" * 600, "'\"<script>"]


@pytest.fixture
def hostile() -> Any:
    with hostile_server() as server:
        yield server


def cli(*args: str, cwd: Path, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`sora-video` as a user runs it, with its own state under ``home`` and no Prefect API."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "OPENAI_BASE_URL"))}
    environment.update(SORA_HOME=str(home), OPENAI_API_KEY=SENTINEL_API_KEY, **env)
    return subprocess.run(
        [sys.executable, "-m", "sora_tasks.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=180,
    )


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@pytest.mark.parametrize(
    "hostile_id", HOSTILE_IDS, ids=["dotdot", "slash-dotdot", "space", "newline", "long", "quotes"]
)
def test_an_id_the_server_chooses_places_no_file_and_is_never_followed(
    hostile: HostileServer, tmp_path: Path, hostile_id: str
) -> None:
    hostile.job_id = hostile_id
    (tmp_path / "work" / "out").mkdir(parents=True)
    done = cli(
        "--local", "--base-url", hostile.base_url, "--prompt", "hostile", "--output", "work/out/{video_id}.mp4",
        cwd=tmp_path, home=tmp_path / "home",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert hostile.base_url in done.stderr and "not safe to use" in done.stderr
    assert repr(hostile_id)[:40] in done.stderr  # shown escaped and cut, never raw
    # The create answered; nothing was asked about the id, nothing was downloaded or recorded.
    assert [(seen.method, seen.path) for seen in hostile.seen] == [("POST", "/v1/videos")]
    # No video, no receipt, no claim left standing, no ledger record.
    assert [name for name in files_under(tmp_path) if not name.startswith("home/services")] == []
    assert Ledger(str(tmp_path / "home" / "pending")).pending() == []


def test_the_flows_refuse_an_unsafe_id_too(hostile: HostileServer, tmp_path: Path) -> None:
    hostile.job_id = "../../escaped"
    with pytest.raises(UntrustedAnswerError, match="not safe to use") as refused:
        generate_video("hostile", output=str(tmp_path / "out" / "{video_id}.mp4"), api=api_for(hostile.base_url))
    assert refused.value.server == hostile.base_url and refused.value.video_id is None
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"prompt": "hostile"}) + "\n")
    state = generate_videos(
        str(manifest), output_prefix=str(tmp_path / "batch"), api=api_for(hostile.base_url), return_state=True
    )
    [row] = state.result(raise_on_failure=False).rows
    assert row["status"] == "failed" and "not safe to use" in row["error"] and not row.get("video_id")
    assert files_under(tmp_path) == ["rows.jsonl"]


def test_list_pages_with_unsafe_ids_are_never_adopted_or_followed(hostile: HostileServer) -> None:
    client = VideosClient(api_key="sk-test", base_url=hostile.base_url, provider="openai")
    hostile.listed_ids = ["../../escaped", "video_fine_one"]
    videos, _, _ = client.list_recent()
    assert [video.id for video in videos] == ["video_fine_one"]
    # A create that fails ambiguously (500) is reconciled against the list: the job that
    # matches has an unsafe id, so nothing is adopted and the create is reported as failed.
    hostile.listed_ids = ["../../escaped"]
    hostile.status_code = 500
    request = VideoRequest(prompt="hostile", model="sora-2", seconds="4", size="1280x720")
    with pytest.raises(TransientError):
        client.create(request)
    assert not [seen for seen in hostile.seen if "escaped" in seen.path]


def test_a_fake_mp4_is_refused_and_kept_for_collection(hostile: HostileServer, tmp_path: Path) -> None:
    hostile.content = b"\0\0\0\x18ftypisom" + b"\0" * 18  # 30 bytes that start like an MP4
    done = cli(
        "--local", "--base-url", hostile.base_url, "--prompt", "hostile", "--output", "clip.mp4",
        cwd=tmp_path, home=tmp_path / "home",
    )  # fmt: skip
    assert done.returncode == 1 and "not a valid MP4" in done.stderr and "video_fine" in done.stderr
    assert not (tmp_path / "clip.mp4").exists()
    # Paid for: recorded, so `sora-video pending` can deliver it once the server sends a real one.
    [record] = Ledger(str(tmp_path / "home" / "pending")).pending()
    assert record.video_id == "video_fine"
    hostile.content = real_mp4()
    swept = cli("pending", "--local", "--base-url", hostile.base_url, cwd=tmp_path, home=tmp_path / "home")
    assert swept.returncode == 0, swept.stderr
    assert "delivered" in swept.stdout and (tmp_path / "clip.mp4").read_bytes() == hostile.content


def test_downloads_stop_at_the_cap(hostile: HostileServer, tmp_path: Path) -> None:
    client = ApiSettings(base_url=hostile.base_url, api_key=None, provider="openai", max_download_mb=1).new_client()
    hostile.content = 5 * 1024 * 1024  # streamed with no length, past the cap
    with pytest.raises(DownloadError, match="more than the 1 MB cap") as endless:
        client.download("video_fine", directory=tmp_path)
    assert endless.value.video_id == "video_fine"
    hostile.content, hostile.content_length = b"x" * 100, 10**12  # claims a terabyte
    with pytest.raises(DownloadError, match="1000000000000 bytes, more than the 1 MB cap"):
        client.download("video_fine", directory=tmp_path)
    assert files_under(tmp_path) == []


def test_a_refused_key_is_a_failure_not_invalid_input(hostile: HostileServer, tmp_path: Path) -> None:
    hostile.status_code = 401
    done = cli(
        "--local", "--base-url", hostile.base_url, "--prompt", "hostile", "--output", "clip.mp4",
        cwd=tmp_path, home=tmp_path / "home",
    )  # fmt: skip
    # A request was sent: exit 1, not 2 ("invalid input, nothing was sent").
    assert done.returncode == 1, done.stderr
    assert "HTTP 401" in done.stderr and "API key was refused" in done.stderr and "invalid input" not in done.stderr


def planted(video_id: str, output: str, base_url: str | None, **fields: Any) -> PendingVideo:
    return PendingVideo(video_id=video_id, output=output, model="sora-2", duration="4", resolution="1280x720",
                        base_url=base_url, provider="openai", **fields)  # fmt: skip


def test_a_planted_local_record_never_sends_the_key_elsewhere(
    emulator: Any, hostile: HostileServer, tmp_path: Path
) -> None:
    ledger = Ledger(str(tmp_path / "ledger"))
    ledger.add(planted("video_x", str(tmp_path / "x.mp4"), hostile.base_url))
    swept = cli(
        "pending", "--local", "--ledger", ledger.location, "--base-url", emulator.base_url,
        cwd=tmp_path, home=tmp_path / "home",
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert hostile.seen == [] and api_requests(emulator) == []
    assert "video_x\tskipped\trecorded for the server" in swept.stdout
    assert [record.video_id for record in ledger.pending()] == ["video_x"]  # kept: it may be another sweep's
    assert not (tmp_path / "x.mp4").exists()


def test_a_shared_s3_ledger_chooses_neither_server_nor_place(
    emulator: Any, hostile: HostileServer, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = f"s3://{bucket}/shared/pending"
    ledger = Ledger(location, s3)
    job = emulator.state.create_job(model="sora-2", prompt="a real one", seconds="4", size="1280x720")
    wait_until_completed(emulator.state, job)
    ledger.add(planted(job.id, f"s3://{bucket}/videos/real.mp4", emulator.base_url))  # the only good record
    ledger.add(planted("video_key_thief", f"s3://{bucket}/videos/a.mp4", hostile.base_url))
    ledger.add(planted("video_file_writer", str(tmp_path / "owned.mp4"), emulator.base_url))
    ledger.add(planted("video_other_bucket", "s3://elsewhere/x.mp4", emulator.base_url))
    ledger.add(planted("video_state", f"s3://{bucket}/.prefect-sora/receipts/x.json", emulator.base_url))
    s3.put_object(
        Bucket=bucket, Key="shared/pending/video_evil.json", Body=json.dumps({"video_id": "../x", "output": "y"})
    )
    # How the shipped collect-pending deployment runs: api=None, the worker's environment.
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    rows = {row["video_id"]: row for row in collect_pending(ledger=location, previews=False)}
    assert rows[job.id]["outcome"] == "delivered"
    assert hostile.seen == []
    assert rows["video_key_thief"]["outcome"] == "skipped" and "not contacted" in rows["video_key_thief"]["detail"]
    assert (
        rows["video_file_writer"]["outcome"] == "skipped"
        and "outside what this sweep writes" in rows["video_file_writer"]["detail"]
    )
    assert rows["video_other_bucket"]["outcome"] == "skipped"
    assert rows["video_state"]["outcome"] == "skipped" and "project's state" in rows["video_state"]["detail"]
    assert [row["outcome"] for video_id, row in rows.items() if "video_evil" in video_id] == ["skipped"]
    assert not (tmp_path / "owned.mp4").exists()
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert [key for key in keys if not key.startswith("shared/pending/")] == ["videos/real.mp4"]
    # Given outputs=..., a sweep may write there, and only there.
    rows = {row["video_id"]: row for row in collect_pending(ledger=location, previews=False, outputs=str(tmp_path))}
    assert rows["video_file_writer"]["outcome"] != "skipped"
    assert rows["video_other_bucket"]["outcome"] == "skipped"


def test_a_receipt_that_names_an_unsafe_id_is_ignored(tmp_path: Path) -> None:
    receipts = Receipts(str(tmp_path / "receipts"))
    receipts.record(Receipt("k" * 64, "../../escaped", "http://x/v1", "sora-2", "4", "1280x720"))
    receipts.record(Receipt("j" * 64, "video_fine", "http://x/v1", "sora-2", "4", "1280x720"))
    (tmp_path / "receipts" / f"{'m' * 64}.json").write_text("{not json")
    assert receipts.find("k" * 64) is None and receipts.find("m" * 64) is None
    found = receipts.find("j" * 64)
    assert found is not None and found.video_id == "video_fine"
