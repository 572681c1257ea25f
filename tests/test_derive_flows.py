"""remix_video, edit_video, extend_video and storyboard: emulator -> Prefect flow run -> disk or S3 (moto).

Each delivers like generate_video, refuses bad input before any paid call, and keeps
its receipts, so a rerun pays for nothing already paid for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sora_tasks.core import VideoRequest, VideosClient
from sora_tasks.core.errors import StoryboardError
from sora_tasks.emulator.render import render_job
from sora_tasks.flows.derive import create_character, edit_video, extend_video, get_character, remix_video
from sora_tasks.flows.storyboard import storyboard

from .apis import api_for
from .media import api_requests, probe_mp4, sha256
from .prefect_api import sora_events


@pytest.fixture(scope="module")
def local_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local 4 s, 1280x720 H.264 MP4, made once for the module."""
    return render_job(tmp_path_factory.mktemp("local"), prompt="local", size="1280x720", seconds=4).video


def finished(emulator: Any, prompt: str = "a source clip", seconds: int = 4) -> str:
    """A completed video on the emulator (one paid create)."""
    client = VideosClient(api_key="k", base_url=emulator.base_url)
    try:
        return client.wait(client.create(VideoRequest.build(prompt, duration=seconds)).id, poll_interval=0.1).id
    finally:
        client.close()


def test_remix_to_disk_and_to_s3(emulator, s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api = api_for(emulator, poll_interval=0.1)
    source = finished(emulator)
    local = remix_video(source, "the same, at dawn", output=str(tmp_path / "{video_id}.mp4"), api=api)
    assert emulator.state.get(local.video_id).remixed_from == source
    probe = probe_mp4(Path(local.uri))
    assert (probe.codec, probe.width, probe.frames) == ("h264", 1280, 96)
    assert (local.operation, local.source, local.how, local.duration) == ("remix", source, "created", 4)

    remote = remix_video(source, "the same, at dusk", output=f"s3://{bucket}/remix/{{video_id}}.mp4", api=api)
    stored = s3.get_object(Bucket=bucket, Key=f"remix/{remote.video_id}.mp4")
    body = stored["Body"].read()
    assert probe_mp4(body).frames == 96 and sha256(body) == remote.sha256
    assert len(stored["Metadata"]["fingerprint"]) == 64
    assert emulator.state.jobs_created_by("remix") == 2
    wanted = {"sora.video.created", "sora.video.completed", "sora.video.uploaded"}
    assert sora_events(remote.video_id, wanted) == wanted


def test_edit_by_id_to_s3_and_by_local_file_to_disk(emulator, s3, bucket: str, local_mp4: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api = api_for(emulator, poll_interval=0.1)
    source = finished(emulator, seconds=8)
    remote = edit_video(source, "warmer light", output=f"s3://{bucket}/edit.mp4", api=api)
    body = s3.get_object(Bucket=bucket, Key="edit.mp4")["Body"].read()
    assert probe_mp4(body).frames == 8 * 24 and remote.duration == 8 and remote.source == source

    local = edit_video(str(local_mp4), "in black and white", output=str(tmp_path / "edit.mp4"), api=api)
    assert probe_mp4(tmp_path / "edit.mp4").frames == 96 and local.operation == "edit"
    assert emulator.state.get(local.video_id).source is None  # uploaded, not by id
    assert emulator.state.jobs_created_by("edit") == 2


def test_extend_by_id_to_disk_then_a_rerun_pays_nothing(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api = api_for(emulator, poll_interval=0.1)
    source = finished(emulator)
    output = str(tmp_path / "extended.mp4")
    first = extend_video(source, "then the rain stops", 4, output=output, api=api)
    probe = probe_mp4(Path(output))
    assert (probe.codec, probe.frames, probe.seconds) == ("h264", 192, 8.0) and first.duration == 8
    requests = len(api_requests(emulator))
    again = extend_video(source, "then the rain stops", "4", output=output, api=api)
    assert (again.how, again.video_id, again.sha256) == ("already delivered", first.video_id, first.sha256)
    assert len(api_requests(emulator)) == requests  # found delivered with no API call
    elsewhere = extend_video(source, "then the rain stops", 4, output=str(tmp_path / "copy.mp4"), api=api)
    assert (elsewhere.how, elsewhere.video_id) == ("resumed", first.video_id)
    assert emulator.state.jobs_created_by("extend") == 1


def test_extend_an_s3_source_to_s3(emulator, s3, bucket: str, local_mp4: Path) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="sources/clip.mp4", Body=local_mp4.read_bytes())
    result = extend_video(
        f"s3://{bucket}/sources/clip.mp4",
        "the camera pulls back",
        8,
        output=f"s3://{bucket}/out/{{video_id}}.mp4",
        api=api_for(emulator, poll_interval=0.1),
    )
    body = s3.get_object(Bucket=bucket, Key=f"out/{result.video_id}.mp4")["Body"].read()
    assert probe_mp4(body).frames == 12 * 24 and result.duration == 12
    assert emulator.state.get(result.video_id).source is None and emulator.state.jobs_created_by("extend") == 1


@pytest.mark.parametrize(
    ("flow", "arguments", "api_fields", "message"),
    [
        ("remix", {"prompt": "  "}, {}, "prompt must be a non-empty string"),
        ("remix", {"source": "LOCAL"}, {}, "remix takes the id of a video"),
        ("remix", {}, {"provider": "vllm-omni"}, "provider vllm-omni does not support remix"),
        ("edit", {"source": "/missing/clip.mp4"}, {}, "no such file"),
        ("edit", {"source": "S3:missing.mp4"}, {}, "no such S3 object"),
        ("edit", {}, {"provider": "sglang"}, "provider sglang does not support edit"),
        ("edit", {"source": "LOCAL"}, {"provider": "litellm"}, "cannot edit a local file"),
        ("extend", {"duration": 5}, {}, r"duration \(the extension's length\) must be one of 4, 8, 12, 16, 20"),
        ("extend", {"duration": 24}, {}, "must be one of 4, 8, 12, 16, 20"),
        ("extend", {}, {"provider": "vllm-omni"}, "provider vllm-omni does not support extend"),
        ("extend", {"output": "s3://no-such-bucket-here/v.mp4"}, {}, "does not exist"),
        ("extend", {"output": "videos/{user}.mp4"}, {}, "allowed: video_id, date, model"),
    ],
)
def test_bad_input_is_refused_before_any_paid_call(  # type: ignore[no-untyped-def]
    emulator,
    s3,
    bucket: str,
    local_mp4: Path,
    flow: str,
    arguments: dict[str, Any],
    api_fields: dict[str, Any],
    message: str,
) -> None:
    given = {
        "source": "video_0123456789abcdef",
        "prompt": "a new take",
        "duration": 4,
        "output": "out/{video_id}.mp4",
        **arguments,
    }
    given["source"] = {"LOCAL": str(local_mp4), "S3:missing.mp4": f"s3://{bucket}/missing.mp4"}.get(
        given["source"], given["source"]
    )
    api = api_for(emulator, **api_fields)
    with pytest.raises(ValueError, match=message):
        if flow == "remix":
            remix_video(given["source"], given["prompt"], output=given["output"], api=api)
        elif flow == "edit":
            edit_video(given["source"], given["prompt"], output=given["output"], api=api)
        else:
            extend_video(given["source"], given["prompt"], given["duration"], output=given["output"], api=api)
    assert emulator.state.jobs_created == 0 and api_requests(emulator) == []


def test_characters_from_a_local_file_and_shown(emulator, local_mp4: Path) -> None:  # type: ignore[no-untyped-def]
    api = api_for(emulator)
    made = create_character("Dawn", str(local_mp4), api=api)
    assert made["name"] == "Dawn" and made["id"].startswith("char_")
    assert get_character(made["id"], api=api) == made
    with pytest.raises(ValueError, match="provider vllm-omni does not support characters"):
        create_character("Dusk", str(local_mp4), api=api_for(emulator, provider="vllm-omni"))


def test_a_storyboard_with_an_image_to_s3(emulator, s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    Image.new("RGB", (900, 1600), (200, 100, 0)).save(tmp_path / "first.png")
    result = storyboard(
        ["A kite rises over the dunes", "The kite dives toward the sea"],
        output=f"s3://{bucket}/board/{{video_id}}.mp4",
        image=str(tmp_path / "first.png"),
        resolution="720x1280",
        duration=[4, 8],
        api=api_for(emulator, poll_interval=0.1),
    )
    body = s3.get_object(Bucket=bucket, Key=f"board/{result.video_id}.mp4")["Body"].read()
    probe = probe_mp4(body)
    assert (probe.width, probe.height, probe.frames) == (720, 1280, 12 * 24)
    assert result.duration == 12 and [shot.duration for shot in result.shots] == [4, 8]
    first, second = (emulator.state.get(shot.video_id) for shot in result.shots)
    assert first.reference is not None and second.source == first.id and result.video_id == second.id
    assert [emulator.state.jobs_created_by(kind) for kind in ("create", "extend")] == [1, 1]


def test_a_failed_storyboard_resumes_without_paying_again_for_finished_shots(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shots = ["A fox wakes in its den", "The fox runs across the snow", "The fox leaps over a frozen stream"]
    api = api_for(emulator, poll_interval=0.1)
    output = str(tmp_path / "fox.mp4")
    # The fault: the second extension (shot 3) is a job that fails (moderation_blocked) after it is paid for.
    emulator.faults.moderation_words = ("leaps",)
    with pytest.raises(StoryboardError, match=r"shot 3 of 3 failed.*moderation_blocked.*resume from shot 3") as failed:
        storyboard(shots, output=output, duration=[4, 4, 8], api=api)
    error = failed.value
    assert (error.shot, error.code, len(error.completed)) == (3, "moderation_blocked", 2)
    assert error.video_id == error.shot_video_id and emulator.state.get(error.video_id).kind == "extend"
    assert [emulator.state.jobs_created_by(kind) for kind in ("create", "extend")] == [1, 2]
    assert not Path(output).exists()  # only the final video is ever delivered

    emulator.faults.moderation_words = ()
    result = storyboard(shots, output=output, duration=[4, 4, 8], api=api)
    # Shots 1 and 2 are followed, not paid again; only shot 3 is made anew.
    assert [emulator.state.jobs_created_by(kind) for kind in ("create", "extend")] == [1, 3]
    assert [shot.how for shot in result.shots] == ["resumed", "resumed", "recreated"]
    assert [shot.video_id for shot in result.shots[:2]] == list(error.completed)
    assert result.how == "resumed" and result.duration == 16
    probe = probe_mp4(Path(output))
    assert (probe.codec, probe.frames, probe.seconds) == ("h264", 24 * 16, 16.0)

    requests = len(api_requests(emulator))
    again = storyboard(shots, output=output, duration=[4, 4, 8], api=api)
    assert again.how == "already delivered" and again.video_id == result.video_id
    assert len(api_requests(emulator)) == requests  # nothing asked of the server at all


@pytest.mark.parametrize(
    ("arguments", "api_fields", "message"),
    [
        ({"shots": []}, {}, "shots must be a non-empty list"),
        ({"shots": ["a fox", " "]}, {}, "shot 2 prompt must be a non-empty string"),
        ({"duration": 5}, {}, "shot 1: duration must be one of 4, 8, 12"),
        ({"duration": [4, 24]}, {}, "duration of shot 2 .* must be one of 4, 8, 12, 16, 20"),
        ({"duration": [4]}, {}, r"one a shot \(2 shots\), got 1 values"),
        ({"resolution": "1920x1080"}, {}, "no 1080p size"),
        ({"image": "/missing/photo.png"}, {}, "no such file"),
        ({}, {"provider": "vllm-omni"}, "provider vllm-omni does not support extend"),
    ],
)
def test_a_bad_storyboard_is_refused_before_any_paid_call(  # type: ignore[no-untyped-def]
    emulator, arguments: dict[str, Any], api_fields: dict[str, Any], message: str
) -> None:
    given: dict[str, Any] = {"shots": ["a fox", "a fox running"], "output": "out/{video_id}.mp4", **arguments}
    with pytest.raises(ValueError, match=message):
        storyboard(**given, api=api_for(emulator, **api_fields))
    assert emulator.state.jobs_created == 0 and api_requests(emulator) == []


def test_an_extension_whose_answer_was_lost_is_adopted_not_paid_twice(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The server makes shot 2's job, then answers 500: the job list shows it, so it is taken up.
    emulator.faults.inject("create_then_500", endpoint="extend")
    result = storyboard(
        ["A boat leaves the harbour", "The boat reaches open sea"],
        output=str(tmp_path / "boat.mp4"),
        api=api_for(emulator, poll_interval=0.1),
    )
    assert [emulator.state.jobs_created_by(kind) for kind in ("create", "extend")] == [1, 1]
    assert result.video_id == result.shots[1].video_id and probe_mp4(Path(result.uri)).frames == 8 * 24
