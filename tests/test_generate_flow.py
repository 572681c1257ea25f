"""The sync flow end to end: emulator -> Prefect flow run -> S3 (moto) or disk."""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sora_tasks.blocks import VideosApi
from sora_tasks.core import ModerationBlockedError, ServerRejectedError, VideoJobError, VideoTimeoutError
from sora_tasks.core.spec import VideoSpec
from sora_tasks.core.text import markdown_text
from sora_tasks.flows.generate import generate_video

from .apis import api_for
from .media import api_requests, probe_mp4, sha256


def emulator_bytes(emulator: Any, video_id: str) -> bytes:
    return emulator.state.get(video_id).render.result().video.read_bytes()  # type: ignore[no-any-return]


def run_artifacts(flow_run_id: Any) -> list[dict[str, Any]]:
    """Artifacts of one flow run, read from the test Prefect server's REST API."""
    # Prefect's own client: 3.9 bounds FastAPI below 0.151, whose server refused the nulls it sends.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])), limit=50
        )
    return [artifact.model_dump(mode="json") for artifact in found]


def test_text_to_video_lands_in_s3_checked(emulator, s3, bucket: str, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    state = generate_video(
        VideoSpec(prompt=unique_prompt, duration=8, resolution="720x1280"),
        output=f"s3://{bucket}/runs/{{date}}/{{model}}/{{video_id}}.mp4",
        api=api_for(emulator, poll_interval=0.1),
        return_state=True,
    )
    result = state.result()
    key = result.uri.removeprefix(f"s3://{bucket}/")
    assert key.startswith("runs/") and key.endswith(f"/sora-2/{result.video_id}.mp4")
    obj = s3.get_object(Bucket=bucket, Key=key)
    body = obj["Body"].read()
    probe = probe_mp4(body)
    assert (probe.codec, probe.width, probe.height, probe.seconds) == ("h264", 720, 1280, 8.0)
    assert sha256(body) == sha256(emulator_bytes(emulator, result.video_id)) == result.sha256
    assert obj["ContentType"] == "video/mp4"
    assert obj["Metadata"] == {
        "video-id": result.video_id,
        "model": "sora-2",
        "seconds": "8",
        "size": "720x1280",
        "prompt-sha256": sha256(unique_prompt.encode()),
        "sha256": result.sha256,
        "fingerprint": obj["Metadata"]["fingerprint"],  # the request's receipt key: a rerun sees it is done
    }
    assert len(obj["Metadata"]["fingerprint"]) == 64
    assert result.bytes == len(body) and result.status == "completed" and result.expires_at
    assert (result.model, result.duration, result.resolution) == ("sora-2", 8, "720x1280")
    assert set(result.timings) == {"preprocess", "create", "wait", "download", "check", "upload", "previews"}
    assert result.quality is not None and result.quality["passed"]  # checked before it was stored
    # The previews, beside the video by default: same name, the variant's extension.
    stem = key.removesuffix(".mp4")
    assert result.thumbnail_uri == f"s3://{bucket}/{stem}.thumbnail.webp"
    assert result.spritesheet_uri == f"s3://{bucket}/{stem}.spritesheet.jpg"
    thumbnail = s3.get_object(Bucket=bucket, Key=f"{stem}.thumbnail.webp")
    assert thumbnail["ContentType"] == "image/webp" and thumbnail["Metadata"]["video-id"] == result.video_id
    with Image.open(io.BytesIO(thumbnail["Body"].read())) as image:
        assert (image.format, image.size) == ("WEBP", (720, 1280))  # the video's own aspect
    sheet = s3.get_object(Bucket=bucket, Key=f"{stem}.spritesheet.jpg")
    assert Image.open(io.BytesIO(sheet["Body"].read())).format == "JPEG"
    artifacts = run_artifacts(state.state_details.flow_run_id)
    assert sorted(artifact["type"] for artifact in artifacts) == ["markdown", "markdown", "progress"]
    # The link: the URI as its (escaped) text, to what a browser can open (a presigned GET; never s3:).
    [link] = [a for a in artifacts if str(a["data"]).startswith(f"[{markdown_text(result.uri)}](")]
    assert link["data"].split("](", 1)[1].startswith(os.environ["AWS_ENDPOINT_URL"]), link["data"]
    [summary] = [artifact for artifact in artifacts if artifact["key"]]
    assert summary["key"] == "generate-video"  # no deployment: the flow's name
    assert f"![thumbnail of {result.video_id}](" in summary["data"]
    assert f"| video id | `{result.video_id}` |" in summary["data"]
    assert "| estimated cost | $0.80 |" in summary["data"] and "| **total** |" in summary["data"]
    # One video, its thumbnail and its spritesheet.
    assert emulator.state.jobs_created == 1 and emulator.state.count("content") == 3


def test_image_to_video_to_s3_and_disk(emulator, s3, bucket: str, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (3000, 2000), (20, 160, 60)).save(photo, quality=90)
    api = api_for(emulator, poll_interval=0.1)
    s3_result = generate_video(
        VideoSpec(prompt=unique_prompt, image=str(photo)),
        output=f"s3://{bucket}/i2v/{{video_id}}.mp4",
        api=api,
    )
    body = s3.get_object(Bucket=bucket, Key=f"i2v/{s3_result.video_id}.mp4")["Body"].read()
    assert probe_mp4(body).width == 1280 and sha256(body) == s3_result.sha256
    job = emulator.state.get(s3_result.video_id)
    assert job.reference is not None and Image.open(io.BytesIO(job.reference)).size == (1280, 720)

    local = generate_video(
        VideoSpec(prompt=unique_prompt + " again", image=str(photo), fit="contain"),
        output=str(tmp_path / "out" / "{video_id}.mp4"),
        api=api,
    )
    written = Path(local.uri)
    assert written.parent == tmp_path / "out" and written.read_bytes() == emulator_bytes(emulator, local.video_id)
    probe = probe_mp4(written)
    assert (probe.codec, probe.width, probe.height, probe.frames) == ("h264", 1280, 720, 96)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt": "  "}, "prompt"),
        ({"duration": 5}, "duration must be one of 4, 8, 12"),
        ({"resolution": "1920x1080"}, "no 1080p size"),
        ({"resolution": "1080x1920"}, "allowed: 720x1280, 1280x720"),
        ({"resolution": "1792x1024"}, "needs sora-2-pro"),
        ({"image": "/missing/photo.png"}, "no such file"),
        ({"output": "s3://bucket-x/../etc/passwd"}, r"'\.\.' segments"),
        ({"output": "s3:///no-bucket.mp4"}, "names no bucket"),
        ({"output": "s3://no-such-bucket-here/v.mp4"}, "does not exist"),
        ({"output": "ftp://host/v.mp4"}, "local path or s3://"),
        ({"output": "videos/{user}.mp4"}, "allowed: video_id, date, model"),
        ({"base_url": "not a url"}, "base_url must be an http"),
        ({"preview_url_seconds": 8 * 24 * 3600}, "between 1 and 604800"),
        ({"artifact_key": "!!!"}, "artifact_key '!!!' has no letter or digit"),
    ],
)
def test_bad_input_fails_before_any_request(
    emulator, s3_endpoint: str, overrides: dict[str, Any], message: str
) -> None:  # type: ignore[no-untyped-def]
    # Each override goes where it now lives: the VideoSpec, the VideosApi block, or the flow.
    spec: dict[str, Any] = {"prompt": "valid prompt"}
    api: dict[str, Any] = {"base_url": emulator.base_url}
    arguments: dict[str, Any] = {"output": "out/{video_id}.mp4"}
    for name, value in overrides.items():
        place = spec if name in VideoSpec.model_fields else api if name in VideosApi.model_fields else arguments
        place[name] = value
    with pytest.raises(ValueError, match=message):
        generate_video(VideoSpec(**spec), api=VideosApi(**api), **arguments)
    assert api_requests(emulator) == [] and emulator.state.jobs_created == 0


def test_unknown_model_is_refused_for_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="model must be one of sora-2"):
        generate_video(VideoSpec(prompt="p", model="sora-3"), api=VideosApi(base_url="https://api.openai.com/v1"))


def test_missing_api_key_names_the_options(emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OPENAI_API_KEY")
    # A thread that has built no client yet, whatever earlier tests built in this one
    # (see test_unset_api_key_is_noticed_by_a_worker_that_already_called_the_server).
    with concurrent.futures.ThreadPoolExecutor(1) as fresh_thread:
        run = fresh_thread.submit(generate_video, "p", api=api_for(emulator), output=str(tmp_path / "v.mp4"))
        with pytest.raises(ValueError, match=r"OPENAI_API_KEY.*api_key"):
            run.result()
    assert api_requests(emulator) == []


def test_unset_api_key_is_noticed_by_a_worker_that_already_called_the_server(  # type: ignore[no-untyped-def]
    emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = api_for(emulator)
    api.get_client()  # as any earlier run in this worker with the same settings did
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match=r"OPENAI_API_KEY.*api_key"):
        generate_video("p", api=api, output=str(tmp_path / "v.mp4"))
    assert api_requests(emulator) == []


def test_transient_faults_are_retried(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.inject("429", endpoint="create")
    emulator.faults.inject("500", endpoint="create")  # plain 500: nothing created, reconciled, retried
    emulator.faults.inject("503", endpoint="retrieve", count=2)
    emulator.faults.inject("cut", endpoint="content")
    result = generate_video(
        unique_prompt, output=str(tmp_path / "v.mp4"), api=api_for(emulator, poll_interval=0.1), previews=False
    )
    assert Path(result.uri).read_bytes() == emulator_bytes(emulator, result.video_id)
    state = emulator.state
    assert state.jobs_created == 1
    assert state.count("create", status=429) == 1 and state.count("create", status=500) == 1
    assert state.count("create", status=200) == 1
    assert state.count("list") >= 1  # the 500 was reconciled against the job list before retrying
    assert state.count("retrieve", status=503) == 2
    assert state.count("content") == 2  # the cut download was fetched again


def test_create_then_500_is_reconciled_not_duplicated(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.inject("create_then_500", endpoint="create")
    result = generate_video(unique_prompt, output=str(tmp_path / "v.mp4"), api=api_for(emulator, poll_interval=0.1))
    assert emulator.state.jobs_created == 1 and emulator.state.count("create") == 1
    assert Path(result.uri).stat().st_size == result.bytes


def test_server_validation_errors_are_not_retried(emulator, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    # A self-hosted URL admits unknown models; the emulator (like OpenAI) refuses this one.
    with pytest.raises(ServerRejectedError, match="Invalid value: 'open-video-1'") as caught:
        generate_video(VideoSpec(prompt=unique_prompt, model="open-video-1"), api=api_for(emulator), output="out/v.mp4")
    assert isinstance(caught.value, ValueError) and caught.value.param == "model"
    assert emulator.state.count("create") == 1 and emulator.state.jobs_created == 0


def test_moderation_failure_fails_the_run_with_id_and_code(emulator, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.moderation_words = ("boat",)
    with pytest.raises(ModerationBlockedError) as caught:
        generate_video(unique_prompt, api=api_for(emulator, poll_interval=0.1), output="out/v.mp4")
    error = caught.value
    assert isinstance(error, VideoJobError) and isinstance(error, RuntimeError)
    assert error.code == "moderation_blocked" and error.video_id in str(error)
    assert emulator.state.jobs_created == 1 and emulator.state.count("create") == 1


def test_deadline_raises_timeout_with_the_video_id(emulator, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 30
    with pytest.raises(VideoTimeoutError) as caught:
        generate_video(unique_prompt, api=api_for(emulator, max_wait=0.5, poll_interval=0.1), output="out/v.mp4")
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.video_id.startswith("video_") and caught.value.video_id in str(caught.value)


def test_missing_aws_credentials_fail_before_any_request(
    emulator, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ValueError, match="no AWS credentials"):
        generate_video("p", api=api_for(emulator), output="s3://some-bucket/v.mp4")
    assert api_requests(emulator) == []


def test_saved_api_block_key_and_s3_bucket_block_destination(
    emulator, s3, bucket: str, monkeypatch, unique_prompt: str
) -> None:  # type: ignore[no-untyped-def]
    import os
    import uuid

    from prefect_aws import AwsCredentials, S3Bucket

    from .conftest import SENTINEL_API_KEY

    suffix = uuid.uuid4().hex[:8]
    VideosApi(base_url=emulator.base_url, api_key=SENTINEL_API_KEY, poll_interval=0.1).save(f"sora-{suffix}")
    # moto's endpoint comes from AWS_ENDPOINT_URL; the keys are the block's own.
    S3Bucket(
        bucket_name=bucket,
        bucket_folder="from-block",
        credentials=AwsCredentials(
            aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        ),
    ).save(f"videos-{suffix}")
    emulator.state.config.api_key = SENTINEL_API_KEY  # the server now checks the exact key
    monkeypatch.delenv("OPENAI_API_KEY")  # only the saved block holds the key
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # only the block's credentials can write
    result = generate_video(
        unique_prompt,
        api=f"sora-{suffix}",
        destination=f"videos-{suffix}",
        output="{model}/{video_id}.mp4",
    )
    assert result.uri == f"s3://{bucket}/from-block/sora-2/{result.video_id}.mp4"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTSENTINEL")
    body = s3.get_object(Bucket=bucket, Key=f"from-block/sora-2/{result.video_id}.mp4")["Body"].read()
    assert sha256(body) == result.sha256
    assert emulator.state.jobs_created == 1
    with pytest.raises(ValueError, match="no S3Bucket block named 'nope'"):
        generate_video("p", api=f"sora-{suffix}", destination="nope")
    with pytest.raises(ValueError, match="no VideosApi block named 'nope'"):
        generate_video("p", api="nope", destination=f"videos-{suffix}")
    assert emulator.state.jobs_created == 1  # neither unknown name cost anything


def test_previews_off_a_given_key_and_a_provider_without_previews(  # type: ignore[no-untyped-def]
    emulator, tmp_path: Path, unique_prompt: str, caplog: pytest.LogCaptureFixture
) -> None:
    api = api_for(emulator, poll_interval=0.1)
    # The seed's thumbnail=False still means no thumbnail (and now no spritesheet either).
    state = generate_video(
        unique_prompt,
        output=str(tmp_path / "off" / "{video_id}.mp4"),
        api=api,
        thumbnail=False,
        artifact_key="My Launch Videos!",
        return_state=True,
    )
    result = state.result()
    assert (result.thumbnail_uri, result.spritesheet_uri) == (None, None)
    assert [path.name for path in (tmp_path / "off").iterdir()] == [f"{result.video_id}.mp4"]
    [summary] = [a for a in run_artifacts(state.state_details.flow_run_id) if a["key"]]
    assert summary["key"] == "my-launch-videos" and "no thumbnail" in summary["data"]
    # Local previews: the paths, beside the video; the summary shows the local path.
    local = generate_video(unique_prompt + " local", output=str(tmp_path / "on" / "clip.mp4"), api=api)
    assert sorted(path.name for path in (tmp_path / "on").iterdir()) == [
        "clip.mp4",
        "clip.spritesheet.jpg",
        "clip.thumbnail.webp",
    ]
    assert local.thumbnail_uri == str(tmp_path / "on" / "clip.thumbnail.webp")
    with Image.open(local.thumbnail_uri) as image:
        assert image.size == (1280, 720)
    # A provider that serves no previews: skipped with one warning, never a request for them.
    caplog.set_level(logging.WARNING)
    before = emulator.state.count("content")
    plain = generate_video(
        unique_prompt + " litellm",
        output=str(tmp_path / "plain" / "{video_id}.mp4"),
        api=api_for(emulator, poll_interval=0.1, provider="litellm", model="sora-2"),
    )
    assert plain.thumbnail_uri is None and emulator.state.count("content") == before + 1
    assert "previews skipped: provider litellm serves no thumbnail or spritesheet" in caplog.text
