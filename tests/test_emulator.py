"""The emulator through the official openai SDK, unchanged, over real HTTP."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from sora_tasks.emulator import EmulatorConfig, run_emulator
from sora_tasks.emulator.render import append_free_box

from .media import probe_mp4


@pytest.fixture
def client(emulator) -> OpenAI:  # type: ignore[no-untyped-def]
    return OpenAI(base_url=emulator.base_url, api_key="sk-any", max_retries=0)


def png(size: tuple[int, int], colour: tuple[int, int, int] = (200, 40, 40), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def test_text_to_video_create_and_poll_gives_a_real_h264_mp4(client: OpenAI) -> None:
    video = client.videos.create_and_poll(prompt="A lighthouse at dusk", model="sora-2", seconds="4", size="1280x720")
    assert video.status == "completed" and video.progress == 100
    assert video.completed_at is not None and video.expires_at == video.completed_at + 3600
    probe = probe_mp4(client.videos.download_content(video.id).content)
    assert (probe.codec, probe.width, probe.height, probe.fps, probe.frames) == ("h264", 1280, 720, 24.0, 96)


@pytest.mark.parametrize(("model", "size", "seconds"), [("sora-2", "720x1280", "8"), ("sora-2-pro", "1792x1024", "4")])
def test_image_to_video_animates_the_reference(client: OpenAI, model: str, size: str, seconds: str) -> None:
    width, height = (int(v) for v in size.split("x"))
    video = client.videos.create_and_poll(
        prompt="slow zoom",
        model=model,
        seconds=seconds,
        size=size,
        input_reference=("ref.png", png((width, height), (10, 120, 220)), "image/png"),
    )
    content = client.videos.download_content(video.id).content
    probe = probe_mp4(content)
    assert (probe.width, probe.height, probe.frames) == (width, height, int(seconds) * 24)
    # The reference colour shows through: the first decoded frame is mostly that blue.
    import av

    with av.open(io.BytesIO(content)) as container:
        first = next(container.decode(video=0)).to_image().resize((1, 1)).getpixel((0, 0))
    assert abs(first[0] - 10) < 30 and abs(first[2] - 220) < 30


def test_thumbnail_and_spritesheet_variants(client: OpenAI) -> None:
    video = client.videos.create_and_poll(prompt="variants", size="1280x720")
    thumbnail = client.videos.download_content(video.id, variant="thumbnail")
    sprites = client.videos.download_content(video.id, variant="spritesheet")
    assert Image.open(io.BytesIO(thumbnail.content)).format == "WEBP"
    assert thumbnail.response.headers["content-type"] == "image/webp"
    sheet = Image.open(io.BytesIO(sprites.content))
    assert sheet.format == "JPEG" and sheet.size == (320 * 5, 180 * 2)


def test_retrieve_list_delete_and_remix(client: OpenAI, emulator) -> None:  # type: ignore[no-untyped-def]
    first = client.videos.create(prompt="one", size="1280x720")
    second = client.videos.create(prompt="two", size="1280x720")
    assert client.videos.retrieve(first.id).id == first.id
    listed = client.videos.list(limit=1, order="asc")
    assert [v.id for v in listed.data] == [first.id] and listed.has_more
    assert [v.id for v in client.videos.list(order="asc")] == [first.id, second.id]  # auto-paginates
    remix = client.videos.remix(first.id, prompt="one, but at night")
    assert remix.remixed_from_video_id == first.id and remix.size == "1280x720"
    assert client.videos.delete(second.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(second.id)
    assert emulator.state.jobs_created == 3


def test_lifecycle_queued_in_progress_completed_with_poll_after(emulator, client: OpenAI) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 1.5
    video = client.videos.create(prompt="lifecycle", size="720x1280")
    assert video.status == "queued" and video.progress == 0
    seen: list[tuple[str, int]] = []
    while True:
        raw = client.videos.with_raw_response.retrieve(video.id)
        current = raw.parse()
        seen.append((current.status, current.progress))
        if current.status == "completed":
            assert "openai-poll-after-ms" not in raw.headers
            break
        assert raw.headers["openai-poll-after-ms"] == "100"
        time.sleep(0.1)
    progresses = [p for s, p in seen if s == "in_progress"]
    assert progresses and progresses == sorted(progresses) and progresses[-1] > progresses[0]
    with pytest.raises(openai.BadRequestError, match="not ready"):
        client.videos.download_content(client.videos.create(prompt="too early").id)


def test_assets_expire(emulator, client: OpenAI) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.asset_ttl_seconds = 0.0
    video = client.videos.create_and_poll(prompt="short lived")
    time.sleep(1.1)
    with pytest.raises(openai.NotFoundError, match="expired"):
        client.videos.download_content(video.id)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 32_001}, "prompt"),
        ({"prompt": "ok", "model": "sora-3"}, "model"),
        ({"prompt": "ok", "seconds": "5"}, "seconds"),
        ({"prompt": "ok", "size": "1920x1080"}, "size"),
        ({"prompt": "ok", "model": "sora-2", "size": "1792x1024"}, "size"),
    ],
)
def test_validation_answers_400_in_openai_error_shape(client: OpenAI, emulator, fields, param) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(**fields)
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == param and body["type"] == "invalid_request_error"
    assert emulator.state.jobs_created == 0


def test_input_reference_format_and_size_are_checked(client: OpenAI, emulator) -> None:  # type: ignore[no-untyped-def]
    gif = io.BytesIO()
    Image.new("RGB", (1280, 720)).save(gif, format="GIF")
    with pytest.raises(openai.BadRequestError, match="image/jpeg, image/png and image/webp"):
        client.videos.create(prompt="gif", size="1280x720", input_reference=("a.gif", gif.getvalue(), "image/gif"))
    with pytest.raises(openai.BadRequestError, match="must match the requested width and height"):
        client.videos.create(
            prompt="wrong size", size="1280x720", input_reference=("a.png", png((640, 360)), "image/png")
        )
    webp = client.videos.create(
        prompt="webp ok", size="1280x720", input_reference=("a.webp", png((1280, 720), fmt="WEBP"), "image/webp")
    )
    assert webp.status == "queued" and emulator.state.jobs_created == 1


def test_auth_missing_and_wrong_key(emulator) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{emulator.base_url}/videos")
    assert response.status_code == 401 and "API key" in response.json()["error"]["message"]
    emulator.state.config.api_key = "sk-right"
    with pytest.raises(openai.AuthenticationError) as caught:
        OpenAI(base_url=emulator.base_url, api_key="sk-wrong", max_retries=0).videos.list()
    assert "sk-wrong" not in str(caught.value)
    assert OpenAI(base_url=emulator.base_url, api_key="sk-right").videos.list().data == []


def test_rate_limit_answers_429_with_retry_after_and_the_sdk_honours_it(emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.retry_after_seconds = 0.6
    emulator.faults.inject("429", endpoint="list")
    started = time.monotonic()
    OpenAI(base_url=emulator.base_url, api_key="sk-any", max_retries=2).videos.list()
    assert time.monotonic() - started >= 0.6
    assert emulator.state.count("list", status=429) == 1 and emulator.state.count("list", status=200) == 1


@pytest.mark.parametrize("kind", ["500", "503"])
def test_server_errors(client: OpenAI, emulator, kind: str) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.inject(kind, endpoint="list")
    with pytest.raises(openai.InternalServerError) as caught:
        client.videos.list()
    assert caught.value.status_code == int(kind)


def test_fraction_faults_are_seeded_and_repeatable(emulator, client: OpenAI) -> None:  # type: ignore[no-untyped-def]
    def run() -> list[int]:
        emulator.state.reset()
        emulator.faults._random.seed(7)
        emulator.faults.server_error = 0.5
        statuses = []
        for _ in range(20):
            statuses.append(httpx.get(f"{emulator.base_url}/videos", headers={"Authorization": "Bearer k"}).status_code)
        return statuses

    first, second = run(), run()
    assert first == second and 200 in first and any(code >= 500 for code in first)


def test_cut_download_sends_half_the_promised_body(emulator, client: OpenAI) -> None:  # type: ignore[no-untyped-def]
    video = client.videos.create_and_poll(prompt="cut me")
    emulator.faults.inject("cut", endpoint="content")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{emulator.base_url}/videos/{video.id}/content", headers={"Authorization": "Bearer k"})
    whole = httpx.get(f"{emulator.base_url}/videos/{video.id}/content", headers={"Authorization": "Bearer k"})
    assert whole.status_code == 200 and probe_mp4(whole.content).frames == 96


def test_create_then_500_commits_the_job(emulator, client: OpenAI) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.inject("create_then_500", endpoint="create")
    with pytest.raises(openai.InternalServerError):
        client.videos.create(prompt="ambiguous")
    assert emulator.state.jobs_created == 1
    assert [v.prompt for v in client.videos.list()] == ["ambiguous"]


def test_moderation_blocks_configured_words(emulator, client: OpenAI) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.moderation_words = ("forbidden",)
    video = client.videos.create_and_poll(prompt="A FORBIDDEN scene")
    assert video.status == "failed" and video.error is not None and video.error.code == "moderation_blocked"


def test_slow_responses(emulator, client: OpenAI) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.slow, emulator.faults.slow_seconds = 1.0, 0.4
    started = time.monotonic()
    client.videos.list()
    assert time.monotonic() - started >= 0.4


def test_request_log_and_counters_never_hold_the_key(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    with run_emulator(EmulatorConfig(render_seconds=0.2, request_log=log)) as emulator:
        client = OpenAI(base_url=emulator.base_url, api_key="sk-secret-do-not-log")
        video = client.videos.create_and_poll(prompt="logged", poll_interval_ms=50)
        client.videos.download_content(video.id)
        assert emulator.state.counters["POST create"] == 1 and emulator.state.counters["GET content"] == 1
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"method", "path", "status", "bytes", "seconds"} <= set(lines[0])
    assert any(line["endpoint"] == "content" and line["bytes"] > 1000 for line in lines)
    assert "sk-secret-do-not-log" not in log.read_text()


def test_api_stays_responsive_with_200_jobs_rendering(emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 60.0
    client = OpenAI(base_url=emulator.base_url, api_key="sk-any")
    started = time.monotonic()
    ids = [client.videos.create(prompt=f"job {n}", size="720x1280").id for n in range(200)]
    create_time = time.monotonic() - started
    lookups = []
    for video_id in ids[::20]:
        t = time.monotonic()
        assert client.videos.retrieve(video_id).status in ("queued", "in_progress")
        lookups.append(time.monotonic() - t)
    # 200 renders are minutes of CPU on a worker pool; the API answers regardless.
    assert create_time < 20 and max(lookups) < 1.0, (create_time, lookups)
    emulator.state.reset()  # cancels the renders nobody waits for


def test_pad_bytes_keeps_the_mp4_valid(tmp_path: Path) -> None:
    with run_emulator(EmulatorConfig(render_seconds=0.1, pad_bytes=3_000_000)) as emulator:
        client = OpenAI(base_url=emulator.base_url, api_key="sk-any")
        video = client.videos.create_and_poll(prompt="padded", poll_interval_ms=50)
        content = client.videos.download_content(video.id).content
    assert len(content) > 3_000_000 and probe_mp4(content).frames == 96
    plain = tmp_path / "x.mp4"
    plain.write_bytes(content[:8])
    append_free_box(plain, 0)
    assert plain.stat().st_size == 8


def test_console_script_documents_the_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sora_tasks.emulator", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--render-seconds",
        "--api-key",
        "--pad-bytes",
        "--rate-limit",
        "--server-error",
        "--cut-download",
        "--create-then-500",
        "--moderate",
        "--slow",
        "--request-log",
        "--idle-exit",
        "--url-file",
    ):
        assert flag in out


def test_reset_drops_the_connection_without_an_answer(emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.inject("reset", endpoint="list")
    with pytest.raises(openai.APIConnectionError):
        OpenAI(base_url=emulator.base_url, api_key="sk-any", max_retries=0).videos.list()
    assert emulator.state.count("list", status=0) == 1
    assert OpenAI(base_url=emulator.base_url, api_key="sk-any", max_retries=0).videos.list().data == []
