"""`sora-video remix | edit | extend | character | storyboard` as a user runs them, and the adapter's
remix_video / extend_video: against the emulator, delivering to disk and S3 (moto)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sora_tasks import SoraVideoAdapter
from sora_tasks.core import VideoRequest, VideosClient
from sora_tasks.emulator.render import render_job

from .media import api_requests, probe_mp4
from .prefect_api import prefect_api
from .test_cli import sora_video


@pytest.fixture(scope="module")
def local_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_job(tmp_path_factory.mktemp("local"), prompt="local", size="1280x720", seconds=4).video


@pytest.fixture
def env(emulator) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A server named by OPENAI_BASE_URL (the generic profile: every operation), no Prefect API: the core engine."""
    return {"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-x"}


def finished(emulator: Any, prompt: str = "a source clip") -> str:
    client = VideosClient(api_key="k", base_url=emulator.base_url)
    try:
        return client.wait(client.create(VideoRequest.build(prompt)).id, poll_interval=0.1).id
    finally:
        client.close()


def test_remix_edit_and_extend_deliver(emulator, env, s3, bucket: str, local_mp4: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = finished(emulator)
    remix = sora_video("remix", source, "--prompt", "the same, at dawn", "--output", str(tmp_path / "r.mp4"), env=env)
    assert remix.returncode == 0, remix.stderr
    assert remix.stdout.strip() == str(tmp_path / "r.mp4") and "delivered" in remix.stderr
    assert probe_mp4(tmp_path / "r.mp4").frames == 96

    s3.put_object(Bucket=bucket, Key="in/clip.mp4", Body=local_mp4.read_bytes())
    edit = sora_video(
        "edit", f"s3://{bucket}/in/clip.mp4", "--prompt", "warmer light", "--output", f"s3://{bucket}/e.mp4", env=env
    )
    assert edit.returncode == 0, edit.stderr
    assert probe_mp4(s3.get_object(Bucket=bucket, Key="e.mp4")["Body"].read()).frames == 96

    extend = sora_video(
        "extend", str(local_mp4), "--prompt", "the rain stops", "--seconds", "8", "--output", str(tmp_path / "x.mp4"),
        env=env,
    )  # fmt: skip
    assert extend.returncode == 0, extend.stderr
    probe = probe_mp4(tmp_path / "x.mp4")
    assert (probe.codec, probe.frames) == ("h264", 12 * 24) and "12 s 1280x720" in extend.stderr
    by_duration = sora_video(
        "extend", str(local_mp4), "--prompt", "the rain stops", "--duration", "8", "--output", str(tmp_path / "x.mp4"),
        env=env,
    )  # fmt: skip
    assert by_duration.returncode == 0, by_duration.stderr  # --duration is the same flag; already delivered
    assert [emulator.state.jobs_created_by(kind) for kind in ("remix", "edit", "extend")] == [1, 1, 1]


def test_providers_say_which_operations_they_serve() -> None:
    listed = sora_video("providers")
    assert listed.returncode == 0
    assert "operations: remix, edit (id), extend (id)\n" in listed.stdout  # litellm
    assert "operations: none (create only)" in listed.stdout  # vllm-omni, sglang
    assert "characters (upload), image_url, file_id" in listed.stdout  # openai


def test_characters_are_made_and_shown_as_json(emulator, env, local_mp4: Path) -> None:  # type: ignore[no-untyped-def]
    made = sora_video("character", "create", "--name", "Dawn", "--video", str(local_mp4), env=env)
    assert made.returncode == 0, made.stderr
    character = json.loads(made.stdout)
    assert character["name"] == "Dawn" and character["id"].startswith("char_")
    shown = sora_video("character", "show", character["id"], env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout) == character


def test_a_storyboard_file_to_s3_and_a_json_one_to_disk(emulator, env, s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines = tmp_path / "board.txt"
    lines.write_text("# a short one\nA lantern is lit\n\nThe lantern drifts up into the night\n")
    made = sora_video("storyboard", str(lines), "--output", f"s3://{bucket}/board.mp4", env=env)
    assert made.returncode == 0, made.stderr
    assert "storyboard: 2 shots, 8 s in all" in made.stderr and "shot 2 of 2 (4 s)" in made.stderr
    assert probe_mp4(s3.get_object(Bucket=bucket, Key="board.mp4")["Body"].read()).frames == 8 * 24

    board = tmp_path / "board.json"
    board.write_text(
        json.dumps({"resolution": "720x1280", "shots": [{"prompt": "A door opens", "duration": 8}, "A cat walks in"]})
    )
    made = sora_video("storyboard", str(board), "--output", str(tmp_path / "b.mp4"), env=env)
    assert made.returncode == 0, made.stderr
    probe = probe_mp4(tmp_path / "b.mp4")
    assert (probe.width, probe.height, probe.frames) == (720, 1280, 12 * 24)
    assert [emulator.state.jobs_created_by(kind) for kind in ("create", "extend")] == [2, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["remix", "LOCAL", "--prompt", "x"], "remix takes the id of a video"),
        (["remix", "video_0123456789", "--prompt", " "], "prompt must be a non-empty string"),
        (["remix", "video_0123456789", "--prompt", "x", "--provider", "vllm-omni"], "vllm-omni does not support remix"),
        (["edit", "/missing/clip.mp4", "--prompt", "x"], "no such file"),
        (["edit", "s3://BUCKET/missing.mp4", "--prompt", "x"], "no such S3 object"),
        (["extend", "LOCAL", "--prompt", "x", "--seconds", "5"], "must be one of 4, 8, 12, 16, 20"),
        (
            ["extend", "LOCAL", "--prompt", "x", "--seconds", "4", "--output", "s3://no-such-bucket-here/v.mp4"],
            "does not exist",
        ),
        (
            ["character", "create", "--name", "A", "--video", "LOCAL", "--provider", "sglang"],
            "does not support characters",
        ),
        (["storyboard", "EMPTY"], "shots must be a non-empty list"),
        (["storyboard", "BOARD", "--duration", "4,24"], "duration of shot 2"),
        (["storyboard", "BOARD", "--provider", "vllm-omni", "--model", "m"], "vllm-omni does not support extend"),
        (["storyboard", "/missing/board.txt"], "storyboard file /missing/board.txt"),
    ],
)
def test_bad_input_exits_2_before_anything_is_paid(  # type: ignore[no-untyped-def]
    emulator, env, bucket: str, local_mp4: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "board.txt").write_text("A fox\nThe fox runs\n")
    swap = {
        "LOCAL": str(local_mp4),
        "EMPTY": str(tmp_path / "empty.txt"),
        "BOARD": str(tmp_path / "board.txt"),
        "s3://BUCKET/missing.mp4": f"s3://{bucket}/missing.mp4",
    }
    result = sora_video(*(swap.get(arg, arg) for arg in args), env=env)
    assert result.returncode == 2, result.stderr
    assert "invalid input" in result.stderr and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert emulator.state.jobs_created == 0 and api_requests(emulator) == []


def test_as_flow_runs_with_a_prefect_api(emulator, local_mp4: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prefect.settings import PREFECT_API_URL

    env = {
        "OPENAI_BASE_URL": emulator.base_url,
        "OPENAI_API_KEY": "sk-x",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    extended = sora_video(
        "extend", str(local_mp4), "--prompt", "a tracked extension", "--seconds", "4",
        "--output", str(tmp_path / "{video_id}.mp4"), env=env,
    )  # fmt: skip
    assert extended.returncode == 0, extended.stderr
    assert probe_mp4(Path(extended.stdout.strip())).frames == 8 * 24
    board = tmp_path / "board.txt"
    board.write_text("A tracked shot\nA second tracked shot\n")
    made = sora_video("storyboard", str(board), "--output", str(tmp_path / "board.mp4"), env=env)
    assert made.returncode == 0, made.stderr
    assert probe_mp4(tmp_path / "board.mp4").frames == 8 * 24 and "shot 2 of 2" in made.stderr
    runs = prefect_api(
        "POST",
        "/flow_runs/filter",
        json={"flows": {"name": {"any_": ["extend-video", "storyboard"]}}, "sort": "START_TIME_DESC", "limit": 50},
    )
    finished_runs = {
        run["parameters"].get("prompt") or run["parameters"]["shots"][0]
        for run in runs
        if run["state_type"] == "COMPLETED"
    }
    assert {"a tracked extension", "A tracked shot"} <= finished_runs


def test_the_adapter_remixes_and_extends_to_mp4_bytes(
    emulator, monkeypatch: pytest.MonkeyPatch, local_mp4: Path
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    source = finished(emulator)
    with SoraVideoAdapter(polling_interval=0.1) as adapter:
        remixed = adapter.remix_video(source, "the same, at dusk")
        assert isinstance(remixed, bytes) and probe_mp4(remixed).frames == 96
        extended = adapter.extend_video(source, "then it snows", 4)
        assert isinstance(extended, bytes) and probe_mp4(extended).frames == 8 * 24
        from_file = adapter.extend_video(local_mp4, "then it clears", seconds=8)
        assert isinstance(from_file, bytes) and probe_mp4(from_file).frames == 12 * 24
        video_id = adapter.extend_video(source, "later", 4, wait=False)
        assert isinstance(video_id, str) and video_id.startswith("video_")
        paid = emulator.state.jobs_created
        with pytest.raises(ValueError, match="must be one of 4, 8, 12, 16, 20"):
            adapter.extend_video(source, "x", 6)
        with pytest.raises(ValueError, match="remix takes the id"):
            adapter.remix_video(str(local_mp4), "x")
        assert emulator.state.jobs_created == paid
    assert [emulator.state.jobs_created_by(kind) for kind in ("remix", "extend")] == [1, 3]


def test_a_failed_storyboard_rerun_resumes_on_the_core_engine(emulator, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    board = tmp_path / "board.txt"
    board.write_text("A bell rings\nBirds take off\nThe birds circle the tower\n")
    output = str(tmp_path / "bell.mp4")
    emulator.faults.moderation_words = ("circle",)  # shot 3, the second extension, fails once paid for
    failed = sora_video("storyboard", str(board), "--output", output, env=env)
    assert failed.returncode == 1 and "shot 3 of 3 failed" in failed.stderr and "moderation_blocked" in failed.stderr
    assert [emulator.state.jobs_created_by(kind) for kind in ("create", "extend")] == [1, 2]
    emulator.faults.moderation_words = ()
    resumed = sora_video("storyboard", str(board), "--output", output, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "shot 3 of 3 (4 s)" in resumed.stderr and "(recreated)" in resumed.stderr
    assert [emulator.state.jobs_created_by(kind) for kind in ("create", "extend")] == [1, 3]
    assert probe_mp4(Path(output)).frames == 12 * 24
