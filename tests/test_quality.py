"""The quality check of finished videos: what it measures, and that a broken video never reaches the output.

Broken videos come from two servers: a small Videos API server of the test's own
(tests/odd_videos.py: all black, one frozen frame, half the length, and a good one,
encoded with PyAV) and the emulator's defects (``[fault:KIND]``, ``inject("black")``).
Every run goes through the real openai SDK; ``sora-video`` runs as a user runs it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from openai import OpenAI
from PIL import Image

from sora_tasks.blocks import VideosApi
from sora_tasks.core.errors import BatchFailedError, InvalidRequestError, VideoQualityError
from sora_tasks.core.jobs.gate import rejected_uri
from sora_tasks.core.media.quality import (
    Expectation,
    QualityPolicy,
    QualityThresholds,
    inspect_video,
    parse_quality,
)
from sora_tasks.core.spec import VideoSpec
from sora_tasks.core.storage.ledger import Ledger
from sora_tasks.flows.batch import generate_videos
from sora_tasks.flows.generate import generate_video

from .media import probe_mp4
from .odd_videos import OddVideos, encode, odd_server
from .prefect_api import prefect_api


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OddVideos]:
    with odd_server(tmp_path_factory.mktemp("odd-videos")) as server:
        yield server


def sora_video(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sora_tasks.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def tag() -> str:
    return uuid.uuid4().hex[:8]


def served_kind(odd: OddVideos, path: Path) -> str:
    """Which of the server's videos a delivered file is, by its bytes."""
    data = path.read_bytes()
    return next(kind for kind, video in odd.videos.items() if video == data)


# -- what the check measures ------------------------------------------------------------


def test_the_check_names_each_defect_with_its_figures(tmp_path: Path) -> None:
    asked = Expectation.of("1280x720", 4)
    reports = {
        kind: inspect_video(encode(tmp_path / f"{kind}.mp4", kind), asked)
        for kind in ("good", "black", "frozen", "half")
    }
    assert reports["good"].ok and reports["good"].figures["frames"] == 96
    assert reports["good"].figures["black_fraction"] == 0 and reports["good"].figures["frozen_fraction"] == 0
    assert list(reports["black"].failures) == ["black"] and reports["black"].figures["black_fraction"] == 1.0
    assert reports["black"].figures["longest_black_seconds"] == 4.0
    assert list(reports["frozen"].failures) == ["frozen"] and reports["frozen"].figures["frozen_fraction"] == 1.0
    assert list(reports["half"].failures) == ["duration"] and reports["half"].figures["frames"] == 48
    assert "2.00 s (48 frames), asked 4 s" in reports["half"].failures["duration"]
    wrong = inspect_video(encode(tmp_path / "small.mp4", "good", width=640, height=360), asked)
    assert wrong.failures == {"size": "640x360, asked 1280x720"}
    # No audio: reported, never failed unless the policy asks for it.
    assert reports["good"].notes == {"audio": "no audio track"}
    strict = QualityThresholds(require_audio=True)
    assert list(inspect_video(tmp_path / "good.mp4", asked, strict).failures) == ["audio"]
    assert list(inspect_video(tmp_path / "good.mp4", Expectation.of("1280x720", 8)).failures) == ["duration"]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((tmp_path / "good.mp4").read_bytes()[:2000])
    assert list(inspect_video(broken, asked).failures) == ["container"]


def test_audio_silence_and_the_reference_similarity(tmp_path: Path) -> None:
    def with_audio(path: Path, loud: bool) -> Path:
        with av.open(str(path), "w", format="mp4") as container:
            video = container.add_stream("libx264", rate=24)
            video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
            audio = container.add_stream("aac", rate=48_000, layout="mono")
            for index in range(48):
                pixels = np.full((180, 320, 3), 60, np.uint8)
                pixels[:, (index * 6) % 300 : (index * 6) % 300 + 20] = 250
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts = index
                for packet in video.encode(frame):
                    container.mux(packet)
            for packet in video.encode():
                container.mux(packet)
            for start in range(0, 96_000, 1024):
                t = np.arange(start, start + 1024) / 48_000
                samples = (0.3 * np.sin(2 * np.pi * 440 * t) if loud else np.zeros(1024)).astype(np.float32)
                sound = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
                sound.sample_rate, sound.pts = 48_000, start
                for packet in audio.encode(sound):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
        return path

    asked = Expectation.of("320x180", 2)
    loud = inspect_video(with_audio(tmp_path / "loud.mp4", True), asked)
    silent = inspect_video(with_audio(tmp_path / "silent.mp4", False), asked)
    assert loud.ok and loud.figures["audio"] == "present" and loud.figures["audio_peak_dbfs"] > -15
    assert (
        silent.ok
        and silent.figures["audio"] == "silent"
        and silent.notes == {"silent": "the audio track is silent throughout"}
    )
    strict = QualityThresholds(fail_on_silent_audio=True)
    assert list(inspect_video(tmp_path / "silent.mp4", asked, strict).failures) == ["silent"]
    # The first frame against the fitted reference: alike, and unlike.
    first = Image.new("RGB", (320, 180), (60, 60, 60))
    first.paste((250, 250, 250), (0, 0, 20, 180))
    alike, unlike = io.BytesIO(), io.BytesIO()
    first.save(alike, format="PNG")
    Image.new("RGB", (320, 180), (250, 250, 250)).save(unlike, format="PNG")
    close = inspect_video(tmp_path / "loud.mp4", Expectation.of("320x180", 2, alike.getvalue()))
    far = inspect_video(
        tmp_path / "loud.mp4",
        Expectation.of("320x180", 2, unlike.getvalue()),
        QualityThresholds(min_reference_similarity=0.8),
    )
    assert close.ok and close.figures["reference_similarity"] > 0.9
    assert list(far.failures) == ["reference"] and far.figures["reference_similarity"] < 0.5


def test_one_spelling_of_the_setting_and_a_clear_error_for_any_other() -> None:
    assert parse_quality("retry=1") == parse_quality("retry:1") == parse_quality(" Retry = 1 ") == ("retry", 1)
    assert [parse_quality(text) for text in ("fail", "warn", "off")] == [("fail", 0), ("warn", 0), ("off", 0)]
    for bad in ("sometimes", "retry=0", "retry=9", "retry=x"):
        with pytest.raises(InvalidRequestError, match=r"quality must be one of fail, warn, off or retry=N"):
            parse_quality(bad)
    block = VideosApi(quality="retry:2", quality_thresholds=QualityThresholds(max_black_fraction=0.2))
    assert block.quality == "retry=2" and block.settings().quality_policy == QualityPolicy(
        "retry", 2, QualityThresholds(max_black_fraction=0.2)
    )
    name = f"quality-{tag()}"
    block.save(name)  # as the UI would: the thresholds are a form of their own, kept with the block
    loaded = VideosApi.load(name)
    assert loaded.quality == "retry=2" and loaded.quality_thresholds.max_black_fraction == 0.2  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="quality must be one of"):
        VideosApi(quality="sometimes")
    assert rejected_uri("s3://b/videos/fox.mp4", "video_1") == "s3://b/videos/fox.video_1.rejected.mp4"
    assert rejected_uri("/out/video_1.mp4", "video_1") == "/out/video_1.rejected.mp4"
    result = sora_video("--emulator", "--prompt", "x", "--quality", "retry=9")
    assert result.returncode == 2 and "--quality must be one of fail, warn, off or retry=N" in result.stderr


# -- sora-video against a server of the test's own -------------------------------------------


@pytest.mark.parametrize(("kind", "check"), [("black", "black"), ("frozen", "frozen"), ("half", "duration")])
def test_a_broken_video_exits_1_naming_the_check_and_the_id_and_nothing_reaches_the_output(  # type: ignore[no-untyped-def]
    odd: OddVideos, tmp_path: Path, kind: str, check: str
) -> None:
    output = tmp_path / "clip.mp4"
    before = odd.jobs_created
    result = sora_video("--local", "--base-url", odd.url, "--prompt", f"{kind} {tag()}", "--output", str(output))
    assert result.returncode == 1, result.stderr
    assert odd.jobs_created == before + 1
    [video_id] = [job for job in odd.jobs if job in result.stderr]
    kept = tmp_path / f"clip.{video_id}.rejected.mp4"
    assert f"video {video_id}" in result.stderr and f"code quality_{check}" in result.stderr
    assert f"{check}: " in result.stderr and f"the rejected file is kept at {kept}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not output.exists() and kept.read_bytes() == odd.videos[kind]
    assert sorted(path.name for path in tmp_path.iterdir()) == [kept.name]


def test_a_good_video_is_delivered_and_warn_delivers_a_broken_one_with_a_warning(  # type: ignore[no-untyped-def]
    odd: OddVideos, tmp_path: Path
) -> None:
    good = sora_video(
        "--local", "--base-url", odd.url, "--prompt", f"good {tag()}", "--output", str(tmp_path / "good.mp4")
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == str(tmp_path / "good.mp4") and served_kind(odd, tmp_path / "good.mp4") == "good"
    assert "warning" not in good.stderr and "quality" not in good.stderr

    warned = sora_video(
        "--local", "--base-url", odd.url, "--prompt", f"black {tag()}", "--output", str(tmp_path / "dark.mp4"),
        "--quality", "warn",
    )  # fmt: skip
    assert warned.returncode == 0, warned.stderr
    assert served_kind(odd, tmp_path / "dark.mp4") == "black"
    assert "failed the quality check (black: 100% of the video" in warned.stderr and "delivered anyway" in warned.stderr
    assert not list(tmp_path.glob("*.rejected.mp4"))


def test_retry_pays_exactly_one_more_job_delivers_it_and_a_rerun_pays_nothing(  # type: ignore[no-untyped-def]
    odd: OddVideos, tmp_path: Path
) -> None:
    prompt = f"black then good {tag()}"
    output = tmp_path / "fox.mp4"
    args = ("--local", "--base-url", odd.url, "--prompt", prompt, "--output", str(output), "--quality", "retry=1")
    first = sora_video(*args)
    assert first.returncode == 0, first.stderr
    assert odd.creates[prompt] == 2  # the rejected job and exactly one retry
    rejected, retry = [video_id for video_id, job in odd.jobs.items() if job["prompt"] == prompt]
    assert served_kind(odd, output) == "good" and odd.kinds[retry] == "good" and odd.kinds[rejected] == "black"
    assert (
        f"video {rejected} failed the quality check (black" in first.stderr and "paying for a new job" in first.stderr
    )
    assert f"video {retry}" in first.stderr and f"after rejecting {rejected}" in first.stderr
    assert (tmp_path / f"fox.{rejected}.rejected.mp4").read_bytes() == odd.videos["black"]
    # Each job its own receipt: the rejected one says where it is kept; the retry names the delivery.
    receipts = [json.loads(path.read_text()) for path in (Path(os.environ["SORA_HOME"]) / "receipts").glob("*.json")]
    mine = {receipt["video_id"]: receipt for receipt in receipts if receipt["video_id"] in (rejected, retry)}
    assert mine[rejected]["rejected_codes"] == "quality_black" and mine[rejected]["delivered_uri"] is None
    assert mine[rejected]["rejected_uri"] == str(tmp_path / f"fox.{rejected}.rejected.mp4")
    assert mine[retry]["delivered_uri"] == str(output) and mine[retry]["rejected_codes"] is None

    again = sora_video(*args)
    assert again.returncode == 0, again.stderr
    assert odd.creates[prompt] == 2 and again.stdout.strip() == str(output)  # followed, not paid again


def test_retry_that_fails_again_names_both_jobs(odd: OddVideos, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prompt = f"frozen {tag()}"
    result = sora_video(
        "--local",
        "--base-url",
        odd.url,
        "--prompt",
        prompt,
        "--output",
        str(tmp_path / "x.mp4"),
        "--quality",
        "retry:1",
    )
    assert result.returncode == 1 and odd.creates[prompt] == 2
    first, second = [video_id for video_id, job in odd.jobs.items() if job["prompt"] == prompt]
    assert "code quality_frozen" in result.stderr and f"rejected before it: {first}" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        f"x.{video_id}.rejected.mp4" for video_id in (first, second)
    )


def test_pending_never_delivers_a_rejected_video(odd: OddVideos, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"SORA_LEDGER": str(tmp_path / "ledger")}
    output = tmp_path / "later.mp4"
    submitted = sora_video(
        "--local", "--base-url", odd.url, "--prompt", f"half {tag()}", "--output", str(output), "--async", env=env
    )
    assert submitted.returncode == 0, submitted.stderr
    video_id = submitted.stdout.strip()
    assert Ledger(str(tmp_path / "ledger")).get(video_id).quality == "fail"  # type: ignore[union-attr]
    swept = sora_video("pending", "--local", "--base-url", odd.url, env=env)
    assert swept.returncode == 1, swept.stderr
    assert f"{video_id}\trejected\tquality_duration: duration: 2.00 s" in swept.stdout
    assert f"kept at {tmp_path / f'later.{video_id}.rejected.mp4'}" in swept.stdout
    assert not output.exists() and (tmp_path / f"later.{video_id}.rejected.mp4").exists()
    # The record is gone: no later sweep delivers it as if it were good.
    again = sora_video("pending", "--local", "--base-url", odd.url, env=env)
    assert again.returncode == 0 and "nothing pending" in again.stderr and not output.exists()


# -- the flows, on the emulator's defects --------------------------------------------------------


def test_the_sync_flow_rejects_retries_and_reports_quality(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    api = VideosApi(base_url=emulator.base_url, poll_interval=0.1)
    with pytest.raises(VideoQualityError) as raised:
        generate_video(f"{unique_prompt} [fault:short]", output=str(tmp_path / "short.mp4"), api=api)
    error = raised.value
    assert error.code == "quality_duration" and "asked 4 s" in error.checks["duration"]
    assert error.rejected_uri == str(tmp_path / f"short.{error.video_id}.rejected.mp4")
    assert probe_mp4(Path(error.rejected_uri)).frames == 48 and not (tmp_path / "short.mp4").exists()
    assert emulator.state.jobs_created == 1
    assert error.video_id not in set(Ledger().video_ids())  # rejected, not waiting to be delivered

    emulator.faults.inject("black", endpoint="create")  # the next job only: the retry renders well
    result = generate_video(
        VideoSpec(prompt=unique_prompt), output=str(tmp_path / "{video_id}.mp4"), api=api, quality="retry=1"
    )
    assert emulator.state.jobs_created == 3 and len(result.rejected) == 1
    assert (tmp_path / f"{result.rejected[0]}.rejected.mp4").exists() and Path(result.uri).exists()
    assert result.quality is not None and result.quality["passed"] and result.quality["figures"]["frames"] == 96
    artifacts = prefect_api(
        "POST",
        "/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["generate-video"]}}, "sort": "CREATED_DESC", "limit": 1},
    )
    assert "**Quality check: passed**" in artifacts[0]["data"] and result.rejected[0] in artifacts[0]["data"]

    warned = generate_video(
        f"{unique_prompt} [fault:size]", output=str(tmp_path / "small.mp4"), api=api, quality="warn"
    )
    assert warned.quality is not None and warned.quality["failures"] == {"size": "640x360, asked 1280x720"}
    assert probe_mp4(Path(warned.uri)).width == 640
    off = generate_video(f"{unique_prompt} [fault:black]", output=str(tmp_path / "off.mp4"), api=api, quality="off")
    assert off.quality is None and Path(off.uri).exists()
    with pytest.raises(ValueError, match="quality must be one of"):
        generate_video(unique_prompt, output=str(tmp_path / "never.mp4"), api=api, quality="always")
    assert emulator.state.jobs_created == 5


def test_a_batch_with_one_broken_row_delivers_the_others(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mark = tag()
    manifest = tmp_path / "rows.jsonl"
    rows = [
        {"prompt": f"row one {mark}"},
        {"prompt": f"row two {mark} [fault:frozen]"},
        {"prompt": f"row three {mark}"},
    ]
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    state = generate_videos(
        manifest=str(manifest),
        output_prefix=str(tmp_path / "out"),
        api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
        previews=False,
        artifact_key=f"quality-{mark}",
        return_state=True,
    )
    with pytest.raises(BatchFailedError) as raised:
        state.result()
    outcome = {row["row"]: row for row in raised.value.rows}
    assert [outcome[n]["status"] for n in (1, 2, 3)] == ["delivered", "failed", "delivered"]
    assert outcome[1]["quality"] == outcome[3]["quality"] == "passed"
    bad = outcome[2]
    assert bad["code"] == "quality_frozen" and bad["video_id"] and bad["cost_usd"] > 0
    assert bad["rejected_uri"] == str(tmp_path / "out" / f"{bad['video_id']}.rejected.mp4")
    assert Path(bad["rejected_uri"]).exists() and not (tmp_path / "out" / f"{bad['video_id']}.mp4").exists()
    [table] = prefect_api("POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": [f"quality-{mark}-table"]}}})
    cells = {row["row"]: row for row in json.loads(table["data"])}
    assert cells[2]["code"] == "quality_frozen" and cells[2]["rejected_uri"] == bad["rejected_uri"]
    assert cells[1]["status"] == "delivered" and cells[1]["quality"] == "passed"


# -- the emulator's defects, through the SDK --------------------------------------------------------


def test_the_emulator_renders_defects_on_request(emulator) -> None:  # type: ignore[no-untyped-def]
    client = OpenAI(base_url=emulator.base_url, api_key="sk-any", max_retries=0)

    def made(prompt: str) -> bytes:
        video = client.videos.create_and_poll(prompt=prompt, size="1280x720", seconds="4", poll_interval_ms=100)
        assert video.status == "completed" and (video.size, video.seconds) == ("1280x720", "4")
        return client.videos.download_content(video.id).content

    small = probe_mp4(made("small [fault:size]"))
    assert (small.width, small.height, small.frames) == (640, 360, 96)
    silent = made("quiet [fault:silent]")
    with av.open(io.BytesIO(silent)) as container:
        assert container.streams.audio and container.streams.audio[0].codec_context.name == "aac"
    emulator.faults.inject("short", endpoint="create")
    assert probe_mp4(made("the next one only")).frames == 48
    assert probe_mp4(made("and then a whole one")).frames == 96


def test_the_seed_adapter_checks_the_bytes_it_returns(emulator, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    from sora_tasks import SoraVideoAdapter

    with SoraVideoAdapter(base_url=emulator.base_url, polling_interval=0.1) as adapter:
        with pytest.raises(RuntimeError) as raised:  # the seed's promise for a failed job
            adapter.generate_text_to_video(prompt=f"{unique_prompt} [fault:black]")
        error = raised.value
        assert isinstance(error, VideoQualityError) and error.code == "quality_black"
        assert error.rejected_uri is not None and Path(error.rejected_uri).exists()
        Path(error.rejected_uri).unlink()
    with SoraVideoAdapter(base_url=emulator.base_url, polling_interval=0.1, quality="warn") as adapter:
        data = adapter.generate_text_to_video(prompt=f"{unique_prompt} [fault:frozen]")
    assert isinstance(data, bytes) and probe_mp4(data).frames == 96
    with pytest.raises(ValueError, match="quality must be one of"):
        SoraVideoAdapter(base_url=emulator.base_url, quality="maybe")
    assert emulator.state.jobs_created == 2


def test_derived_videos_and_storyboards_are_checked_too(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    from sora_tasks.core import VideoRequest, VideosClient
    from sora_tasks.flows.derive import remix_video

    client = VideosClient(api_key="k", base_url=emulator.base_url)
    try:
        source = client.wait(client.create(VideoRequest.build(unique_prompt)).id, poll_interval=0.1).id
    finally:
        client.close()
    emulator.faults.inject("black", endpoint="remix")  # the first remix only: its retry renders well
    remixed = remix_video(
        source,
        "the same, at dawn",
        output=str(tmp_path / "{video_id}.mp4"),
        api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
        quality="retry=1",
    )
    assert emulator.state.jobs_created_by("remix") == 2 and len(remixed.rejected) == 1
    assert (tmp_path / f"{remixed.rejected[0]}.rejected.mp4").exists() and remixed.quality["passed"]  # type: ignore[index]

    # A storyboard on the core engine: its final video (shot 2 extends shot 1) renders frozen.
    board = tmp_path / "board.txt"
    board.write_text(f"{unique_prompt}, shot one\nand then nothing moves [fault:frozen]\n")
    env = {"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-x", "SORA_LEDGER": str(tmp_path / "ledger")}
    output = tmp_path / "story.mp4"
    failed = sora_video("storyboard", str(board), "--output", str(output), env=env)
    assert failed.returncode == 1 and "shot 2 of 2 failed" in failed.stderr and "code quality_frozen" in failed.stderr
    [kept] = tmp_path.glob("story.*.rejected.mp4")
    assert f"kept at {kept}" in failed.stderr and not output.exists()
    assert probe_mp4(kept).frames == 8 * 24
    assert not list((tmp_path / "ledger").glob("*.json"))  # rejected: nothing for `pending` to deliver


def test_as_a_flow_run_a_broken_video_fails_the_same_way(odd: OddVideos, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prefect.settings import PREFECT_API_URL

    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}  # a Prefect API configured: the call is a flow run
    output = tmp_path / "run.mp4"
    prompt = f"frozen then good {tag()}"
    failed = sora_video("--base-url", odd.url, "--prompt", prompt, "--output", str(output), "--no-previews", env=env)
    assert failed.returncode == 1, failed.stderr
    [video_id] = [job for job, made in odd.jobs.items() if made["prompt"] == prompt]
    assert f"video {video_id}" in failed.stderr and "code quality_frozen" in failed.stderr
    assert f"kept at {tmp_path / f'run.{video_id}.rejected.mp4'}" in failed.stderr and not output.exists()
    retried = sora_video(
        "--base-url", odd.url, "--prompt", prompt, "--output", str(output), "--no-previews", "--quality", "retry=1",
        env=env,
    )  # fmt: skip
    # The rerun goes past the job its receipt says was rejected, and pays for one retry only.
    assert retried.returncode == 0, retried.stderr
    assert (
        odd.creates[prompt] == 2
        and served_kind(odd, output) == "good"
        and f"after rejecting {video_id}" in retried.stderr
    )
