"""The seed's Python API and examples, against the emulator (via OPENAI_BASE_URL, as seed code has no base_url)."""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from sora_tasks import SoraVideoAdapter, VideoJob

from .media import api_requests, probe_mp4


@pytest.fixture
def seed_env(emulator, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    return emulator


def test_text_to_video_sync_returns_mp4_bytes(seed_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    adapter = SoraVideoAdapter(polling_interval=0.1)
    video_bytes = adapter.generate_text_to_video(
        prompt="A fashion model walking down a runway", duration=8, resolution="1280x720"
    )
    assert isinstance(video_bytes, bytes)
    (tmp_path / "runway_walk.mp4").write_bytes(video_bytes)
    probe = probe_mp4(tmp_path / "runway_walk.mp4")
    assert (probe.codec, probe.width, probe.height, probe.seconds) == ("h264", 1280, 720, 8.0)


def test_seed_full_hd_examples_get_a_clear_value_error(seed_env) -> None:  # type: ignore[no-untyped-def]
    adapter = SoraVideoAdapter()
    for resolution in ("1920x1080", "1080x1920"):
        with pytest.raises(ValueError, match=r"no 1080p size.*allowed: 720x1280, 1280x720"):
            adapter.generate_text_to_video(prompt="Fabric flowing", duration=8, resolution=resolution)
    with pytest.raises(ValueError, match="duration"):
        adapter.generate_text_to_video(prompt="x", duration=5)
    with pytest.raises(ValueError, match="model"):
        SoraVideoAdapter(model_version="sora-3", base_url="https://api.openai.com/v1")
    assert api_requests(seed_env) == []


def test_sora_2_pro_sizes(seed_env) -> None:  # type: ignore[no-untyped-def]
    adapter = SoraVideoAdapter(model_version="sora-2-pro", polling_interval=0.1)
    video = adapter.generate_text_to_video(prompt="Cinematic fabric", duration=4, resolution="1792x1024")
    assert isinstance(video, bytes) and probe_mp4(video).width == 1792


@pytest.mark.parametrize("kind", ["path", "bytesio", "pil"])
def test_image_to_video_accepts_path_bytesio_and_pil(seed_env, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    photo = Image.new("RGB", (1000, 1400), (30, 90, 200))
    path = tmp_path / "model_photo.jpg"
    photo.save(path)
    image = {"path": str(path), "bytesio": io.BytesIO(path.read_bytes()), "pil": photo}[kind]
    adapter = SoraVideoAdapter(polling_interval=0.1)
    video = adapter.generate_image_to_video(
        image=image, prompt="The model turns around", duration=4, resolution="720x1280"
    )
    assert isinstance(video, bytes) and probe_mp4(video).height == 1280


def test_async_callbacks_progress_and_wait_all(seed_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seed_env.state.config.render_seconds = 1.0
    adapter = SoraVideoAdapter(polling_interval=0.1)
    progress: list[dict] = []
    done = threading.Event()

    def on_complete(video_bytes: bytes) -> None:
        (tmp_path / "output.mp4").write_bytes(video_bytes)
        done.set()

    job = adapter.generate_text_to_video_async(
        prompt="A person trying on outfits",
        duration=8,
        on_complete=on_complete,
        on_error=lambda error: pytest.fail(error),
        on_progress=progress.append,
    )
    assert isinstance(job, str) and isinstance(job, VideoJob) and job.startswith("video_")
    assert not job.done()  # returned right after create
    assert adapter.wait_all(timeout=60) == [job]
    assert done.is_set() and probe_mp4(tmp_path / "output.mp4").seconds == 8.0
    assert progress[-1]["status"] == "completed" and {p["id"] for p in progress} == {job}
    assert any(p["status"] in ("queued", "in_progress") for p in progress)


def test_on_complete_exception_is_not_reported_as_generation_error(seed_env, caplog) -> None:  # type: ignore[no-untyped-def]
    errors: list[str] = []

    def broken(_: bytes) -> None:
        raise KeyError("disk full in user code")

    adapter = SoraVideoAdapter(polling_interval=0.1)
    job = adapter.generate_text_to_video_async(prompt="ok", on_complete=broken, on_error=errors.append)
    with caplog.at_level(logging.ERROR, logger="sora_tasks.adapter"):
        adapter.wait_all(timeout=60)
    assert errors == [] and job.exception() is None and len(job.result()) > 1000
    assert "on_complete callback" in caplog.text and job in caplog.text


def test_failure_without_on_error_is_raised_by_wait_all(seed_env) -> None:  # type: ignore[no-untyped-def]
    seed_env.faults.moderation_words = ("forbidden",)
    adapter = SoraVideoAdapter(polling_interval=0.1)
    job = adapter.generate_text_to_video_async(prompt="something forbidden")
    with pytest.raises(RuntimeError, match=f"{job}.*moderation_blocked"):
        adapter.wait_all(timeout=60)

    reported: list[str] = []
    handled = adapter.generate_text_to_video_async(prompt="forbidden again", on_error=reported.append)
    assert isinstance(handled.exception(timeout=60), RuntimeError)
    assert reported and handled in reported[0] and "moderation_blocked" in reported[0]


def test_manual_status_tracking_loop_from_the_seed(seed_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    adapter = SoraVideoAdapter()
    video_id = adapter.generate_text_to_video(prompt="Fashion runway show", duration=12, wait=False)
    assert isinstance(video_id, str)
    with pytest.raises(RuntimeError, match="not ready"):
        adapter.download_video(video_id)
    statuses = []
    while True:
        status = adapter.get_video_status(video_id)
        statuses.append(status["status"])
        assert set(status) >= {"status", "id", "progress", "error"} and "url" not in status
        if status["status"] == "completed":
            (tmp_path / "runway_show.mp4").write_bytes(adapter.download_video(video_id))
            break
        assert status["status"] != "failed"
        time.sleep(0.1)
    assert probe_mp4(tmp_path / "runway_show.mp4").seconds == 12.0


def test_timeout_and_failure_errors_carry_the_video_id(seed_env) -> None:  # type: ignore[no-untyped-def]
    seed_env.state.config.render_seconds = 30
    adapter = SoraVideoAdapter(polling_interval=0.1, max_polling_time=0.5)
    with pytest.raises(TimeoutError, match=r"video_[0-9a-f]+ not finished"):
        adapter.generate_text_to_video(prompt="slow")
    seed_env.state.config.render_seconds = 0.2
    seed_env.faults.moderation_words = ("blocked",)
    adapter = SoraVideoAdapter(polling_interval=0.1)
    with pytest.raises(RuntimeError, match=r"video_[0-9a-f]+ failed: moderation_blocked"):
        adapter.generate_text_to_video(prompt="blocked prompt")
    status = adapter.get_video_status(seed_env.state.listing()[-1].id)
    assert status["status"] == "failed" and status["error_code"] == "moderation_blocked" and status["error"]


def test_missing_api_key_is_a_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        SoraVideoAdapter()
