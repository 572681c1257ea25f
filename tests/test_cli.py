"""`sora-video` as a user runs it: a separate process, the background emulator or a test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .media import probe_mp4


def sora_video(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sora_tasks.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=300,
    )


def test_no_key_uses_the_local_emulator_and_writes_a_real_mp4(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "sora_tasks.cli", "--prompt", "A kite over the sea", "--output", "clip.mp4"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "using the local Sora emulator" in result.stderr or "delivered" in result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "clip.mp4"
    probe = probe_mp4(tmp_path / "clip.mp4")
    assert (probe.codec, probe.width, probe.height, probe.frames) == ("h264", 1280, 720, 96)
    # Previews by default, beside the video.
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == [
        "clip.mp4",
        "clip.spritesheet.jpg",
        "clip.thumbnail.webp",
    ]


def test_image_to_video_to_s3_with_seed_flags(tmp_path: Path, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    Image.new("RGB", (900, 1600), (200, 100, 0)).save(tmp_path / "portrait.png")
    result = sora_video(
        "--emulator",
        "--image",
        str(tmp_path / "portrait.png"),
        "--prompt",
        "The model waves",
        "--model",
        "sora-2-pro",
        "--duration",
        "8",
        "--resolution",
        "1024x1792",
        "--output",
        f"s3://{bucket}/cli/{{video_id}}.mp4",
    )
    assert result.returncode == 0, result.stderr
    uri = result.stdout.strip()
    body = s3.get_object(Bucket=bucket, Key=uri.removeprefix(f"s3://{bucket}/"))["Body"].read()
    probe = probe_mp4(body)
    assert (probe.width, probe.height, probe.seconds) == (1024, 1792, 8.0)


def test_invalid_input_exits_2_with_the_allowed_values() -> None:
    result = sora_video("--emulator", "--prompt", "x", "--resolution", "1920x1080")
    assert result.returncode == 2
    assert "invalid input" in result.stderr and "720x1280, 1280x720" in result.stderr
    assert sora_video("--emulator", "--prompt", "x", "--duration", "6").returncode == 2


def test_generation_failure_exits_1_naming_the_video_and_code() -> None:
    # The emulator is the server here, so an unknown model reaches it and is refused by it;
    # the timeout is the failure that keeps a video id.
    result = sora_video("--emulator", "--prompt", "slow one", "--max-wait", "0.5")
    assert result.returncode == 1
    assert "failed (video video_" in result.stderr and "collect it later" in result.stderr


def test_async_prints_an_id_and_status_and_collect_work_against_a_server(tmp_path: Path, emulator) -> None:  # type: ignore[no-untyped-def]
    env = {"OPENAI_BASE_URL": emulator.base_url, "SORA_LEDGER": str(tmp_path / "ledger")}
    submitted = sora_video(
        "--prompt",
        "Fabric in slow motion",
        "--duration",
        "8",
        "--async",
        "--output",
        str(tmp_path / "fabric.mp4"),
        env=env,
    )
    assert submitted.returncode == 0, submitted.stderr
    video_id = submitted.stdout.strip()
    assert video_id.startswith("video_") and emulator.state.jobs_created == 1

    status = sora_video("status", video_id, env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == video_id

    emulator.state.config.render_seconds = 60  # hold the job in progress
    early = sora_video("collect", video_id, "--output", str(tmp_path / "x.mp4"), env=env)
    assert early.returncode == 1 and "collect it later" in early.stderr and not (tmp_path / "x.mp4").exists()
    emulator.state.config.render_seconds = 0.0  # the clock now says done
    emulator.state.get(video_id).render.result()
    # The seed's `--async --output fabric.mp4`: the recorded job is delivered there by a sweep.
    swept = sora_video("pending", env=env)
    assert swept.returncode == 0 and f"{video_id}\tdelivered" in swept.stdout, swept.stderr
    assert probe_mp4(tmp_path / "fabric.mp4").frames == 8 * 24
    assert list((tmp_path / "ledger").glob("*.json")) == []
    # An explicit collect still delivers a finished video anywhere, as often as asked.
    collected = sora_video("collect", video_id, "--output", str(tmp_path / "{video_id}.mp4"), env=env)
    assert collected.returncode == 0, collected.stderr
    assert probe_mp4(tmp_path / f"{video_id}.mp4").frames == 8 * 24


def test_providers_are_listed() -> None:
    result = sora_video("providers")
    assert result.returncode == 0
    for name in ("openai", "litellm", "vllm-omni", "sglang", "generic"):
        assert name in result.stdout


def fake_viewer(folder: Path, name: str) -> Path:
    """A viewer on PATH (or $BROWSER) that records what it was asked to open, one line per call."""
    record = folder / f"{name}.opened"
    script = folder / "bin" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{record}"\n')
    script.chmod(0o755)
    return record


def wait_for_lines(record: Path, timeout: float = 20.0) -> list[str]:
    import time

    deadline = time.monotonic() + timeout
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return record.read_text().splitlines() if record.exists() else []


def test_open_shows_the_video_with_the_system_viewer(tmp_path: Path, emulator, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    env = {"OPENAI_BASE_URL": emulator.base_url}
    opened = fake_viewer(tmp_path, "xdg-open")
    viewers = f"{tmp_path / 'bin'}:{os.environ['PATH']}"
    local = sora_video(
        "--prompt", "Opened at once", "--output", str(tmp_path / "open.mp4"), "--open", "--no-previews",
        env={**env, "PATH": viewers},
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert local.stdout.strip() == str(tmp_path / "open.mp4")  # stdout is still only the result
    assert wait_for_lines(opened) == [str(tmp_path / "open.mp4")]
    assert f"opened {tmp_path / 'open.mp4'} with xdg-open" in local.stderr
    assert not (tmp_path / "open.thumbnail.webp").exists()  # --no-previews

    # S3: a presigned URL through the browser ($BROWSER, as Python's webbrowser reads it).
    browsed = fake_viewer(tmp_path, "browser")
    remote = sora_video(
        "--prompt", "Opened from S3", "--output", f"s3://{bucket}/open/{{video_id}}.mp4", "--open",
        env={**env, "BROWSER": str(tmp_path / "bin" / "browser")},
    )  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    [url] = wait_for_lines(browsed)
    key = remote.stdout.strip().removeprefix(f"s3://{bucket}/")
    assert url.startswith(f"{os.environ['AWS_ENDPOINT_URL']}/{bucket}/{key}?") and "Signature=" in url
    import httpx

    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.content[4:8] == b"ftyp"  # the MP4 itself
    assert s3.head_object(Bucket=bucket, Key=key.removesuffix(".mp4") + ".thumbnail.webp")["ContentLength"] > 0

    # No viewer at all: delivered anyway, and a line that says so.
    empty = tmp_path / "nothing"
    empty.mkdir()
    python_only = f"{empty}:{Path(sys.executable).parent}"
    none = sora_video(
        "--prompt", "Nobody to show it", "--output", str(tmp_path / "none.mp4"), "--open",
        env={**env, "PATH": python_only},
    )  # fmt: skip
    assert none.returncode == 0, none.stderr
    assert f"no viewer to open {tmp_path / 'none.mp4'}: xdg-open" in none.stderr
    assert (tmp_path / "none.mp4").exists()

    refused = sora_video("--prompt", "x", "--async", "--open", env=env)
    assert refused.returncode == 2 and "--open" in refused.stderr and emulator.state.jobs_created == 3
