"""Through a real LiteLLM proxy (1.10x, its own venv) in front of the emulator.

The proxy re-encodes video ids, answers retrieve with a shorter id that no longer
routes, serves the MP4 for a thumbnail request, has no list or delete, and gzips
content. Every mode must still deliver the emulator's exact bytes, create each job
once, and degrade (with a warning) where the proxy lacks something.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import av
import pytest

from sora_tasks.core.api.client import VideosClient
from sora_tasks.core.api.providers import detect_provider
from sora_tasks.core.api.request import VideoRequest
from sora_tasks.core.errors import VariantUnavailableError
from sora_tasks.flows.generate import generate_video
from sora_tasks.flows.manual import collect_video, submit_video, video_status

from .apis import api_for
from .media import sha256


def emulator_contents(emulator: Any) -> dict[str, str]:
    """sha256 of every video the emulator rendered, by its own job id."""
    return {
        job.id: sha256(emulator.state.get(job.id).render.result().video.read_bytes())
        for job in emulator.state.listing()
    }


def stored(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listing}


def test_the_proxy_is_detected_and_the_emulator_is_not(litellm_proxy: str, emulator) -> None:  # type: ignore[no-untyped-def]
    assert detect_provider(litellm_proxy) == "litellm"
    assert detect_provider(emulator.base_url) == "generic"


def test_sync_flow_through_the_proxy_delivers_the_exact_bytes_once(  # type: ignore[no-untyped-def]
    litellm_proxy: str, emulator, s3, bucket: str, unique_prompt: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    result = generate_video(
        unique_prompt,
        # generic: assume the whole contract, so the missing thumbnail must be noticed, not assumed
        api=api_for(litellm_proxy, provider="generic", poll_interval=0.2),
        output=f"s3://{bucket}/litellm/{{video_id}}.mp4",
        thumbnail=True,
    )
    assert len(result.video_id) > 60  # the proxy's routed id, kept from create
    objects = stored(s3, bucket, "litellm/")
    assert list(objects) == [result.uri.removeprefix(f"s3://{bucket}/")]  # no thumbnail object at all
    assert result.thumbnail_uri is None
    assert "answered the thumbnail request with a video" in caplog.text
    assert [sha256(body) for body in objects.values()] == list(emulator_contents(emulator).values())
    assert emulator.state.count("create") == 1


def test_manual_mode_through_the_proxy(litellm_proxy: str, emulator, s3, bucket: str, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    api = api_for(litellm_proxy, provider="litellm")
    submitted = submit_video(unique_prompt, api=api)
    deadline = time.monotonic() + 60
    while (status := video_status(submitted.video_id, api=api))["status"] != "completed":
        assert status["status"] in ("queued", "in_progress") and time.monotonic() < deadline
        time.sleep(0.2)
    assert status["id"] == submitted.video_id
    result = collect_video(submitted.video_id, output=f"s3://{bucket}/manual/{{video_id}}.mp4", api=api)
    body = s3.get_object(Bucket=bucket, Key=result.uri.removeprefix(f"s3://{bucket}/"))["Body"].read()
    assert [sha256(body)] == list(emulator_contents(emulator).values())
    assert emulator.state.count("create") == 1


def test_small_batch_through_the_proxy(litellm_proxy: str, emulator, s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sora_tasks.flows.batch import generate_videos

    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("".join(json.dumps({"prompt": f"proxy batch row {i} {time.time()}"}) + "\n" for i in range(3)))
    outcomes = generate_videos(
        manifest=str(manifest),
        output_prefix=f"s3://{bucket}/batch",
        max_in_flight=3,
        api=api_for(litellm_proxy, provider="litellm", poll_interval=0.2),
    )
    assert [outcome["status"] for outcome in outcomes] == ["delivered"] * 3
    bodies = stored(s3, bucket, "batch/")
    assert sorted(sha256(body) for body in bodies.values()) == sorted(emulator_contents(emulator).values())
    assert emulator.state.count("create") == 3


def test_missing_list_delete_and_variants_degrade_with_warnings(  # type: ignore[no-untyped-def]
    litellm_proxy: str, emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    request = VideoRequest.build("degrade gracefully")
    for provider in ("generic", "litellm"):  # asking the proxy, and knowing in advance
        client = VideosClient(api_key="sk-any", base_url=litellm_proxy, provider=provider)
        video = client.create(request)
        assert client.find_created(request, since=time.time() - 60) is None
        assert client.delete(video.id) is False
        client.wait(video.id, poll_interval=0.2)
        with pytest.raises(VariantUnavailableError):
            client.download(video.id, variant="thumbnail")
        assert client.download(video.id).bytes > 0
    assert "cannot list videos" in caplog.text or "cannot be reconciled" in caplog.text
    assert "could not delete" in caplog.text and "cannot delete videos" in caplog.text
    assert emulator.state.count("create") == 2


def test_remix_edit_and_extend_by_id_through_the_proxy(litellm_proxy: str, emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What the litellm profile claims: these reach the backend; uploads and characters are refused before sending."""
    client = VideosClient(api_key="sk-any", base_url=litellm_proxy, provider="litellm")
    source = client.wait(client.create(VideoRequest.build("proxy source")).id, poll_interval=0.2)
    remix = client.remix(source.id, prompt="proxy remix")
    edit = client.edit(prompt="proxy edit", video=source.id)
    extension = client.extend(prompt="proxy extension", seconds=4, video=source.id)
    assert remix.remixed_from_video_id in emulator_contents(emulator)
    assert (edit.seconds, extension.seconds) == ("4", "8")
    client.wait(extension.id, poll_interval=0.2)
    with av.open(str(client.download(extension.id, directory=tmp_path).path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 192
    state = emulator.state
    assert [state.jobs_created_by(kind) for kind in ("create", "remix", "edit", "extend")] == [1, 1, 1, 1]
