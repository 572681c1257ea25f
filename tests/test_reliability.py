"""Never pay twice, never lose a finished video: proven against injected faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sora_tasks.core import StorageError, TransientError, VideoRequest, VideosClient, resolve_destination, store_file
from sora_tasks.core.spec import VideoSpec
from sora_tasks.flows.generate import generate_video

from .apis import api_for


def test_identical_request_is_created_once_and_request_id_makes_a_new_one(
    emulator, tmp_path: Path, unique_prompt: str
) -> None:  # type: ignore[no-untyped-def]
    api = api_for(emulator, poll_interval=0.1)
    first = generate_video(VideoSpec(prompt=unique_prompt), output=str(tmp_path / "a.mp4"), api=api)
    again = generate_video(unique_prompt, output=str(tmp_path / "b.mp4"), api=api)  # a rerun of the same invocation
    assert again.video_id == first.video_id and emulator.state.count("create") == 1
    other = generate_video(
        VideoSpec(prompt=unique_prompt, request_id="take-2"), output=str(tmp_path / "c.mp4"), api=api
    )
    assert other.video_id != first.video_id and emulator.state.jobs_created == 2


def test_flow_run_retry_reuses_the_job(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 1.5
    flaky = generate_video.with_options(retries=1, retry_delay_seconds=2)
    # The first attempt gives up waiting after 0.5 s; the retry finds the same job done.
    result = flaky(
        unique_prompt, api=api_for(emulator, max_wait=0.5, poll_interval=0.1), output=str(tmp_path / "r.mp4")
    )
    assert emulator.state.jobs_created == 1 and emulator.state.count("create") == 1
    assert Path(result.uri).read_bytes() == emulator.state.get(result.video_id).render.result().video.read_bytes()


def test_timed_out_create_is_reconciled_not_resent(emulator) -> None:  # type: ignore[no-untyped-def]
    # The server commits the job but answers after the client gave up waiting.
    emulator.faults.slow_seconds = 1.0
    emulator.faults.inject("slow", endpoint="create")
    client = VideosClient(api_key="k", base_url=emulator.base_url, timeout=0.3, max_retries=0)
    video = client.create(VideoRequest.build("timed out create"))
    time.sleep(1.0)  # the late answer is logged once the server gives up sending it
    assert emulator.state.jobs_created == 1 and emulator.state.count("create") == 1
    assert video.id == emulator.state.listing()[0].id


def test_plain_500_on_create_is_retried_once_nothing_was_made(emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.inject("500", endpoint="create")
    client = VideosClient(api_key="k", base_url=emulator.base_url)
    request = VideoRequest.build("five hundred")
    started = time.time()
    with pytest.raises(TransientError):
        client.create(request)
    video = client.create(request, reconcile_since=started)  # what the retrying task does
    assert emulator.state.jobs_created == 1 and video.id == emulator.state.listing()[0].id


def test_rate_limited_create_waits_for_retry_after(emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.retry_after_seconds = 1.2
    emulator.faults.inject("429", endpoint="create")
    VideosClient(api_key="k", base_url=emulator.base_url).create(VideoRequest.build("patient"))
    attempts = [r.at for r in emulator.state.requests if r.endpoint == "create"]
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 1.2
    assert emulator.state.jobs_created == 1


def test_killed_flow_resumes_the_same_video(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 6.0
    script = textwrap.dedent(
        f"""
        from sora_tasks.flows.generate import generate_video
        from sora_tasks.blocks import VideosApi
        result = generate_video({unique_prompt!r}, api=VideosApi(base_url={emulator.base_url!r}, poll_interval=0.2),
                                output={str(tmp_path / "{video_id}.mp4")!r})
        print(result.video_id)
        """
    )
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    first = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while emulator.state.count("retrieve") < 3:  # created, and polling
        assert first.poll() is None and time.monotonic() < deadline, "the first run never started polling"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    [job] = emulator.state.listing()
    emulator.state.config.render_seconds = 0.5
    rerun = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip().splitlines()[-1] == job.id
    assert emulator.state.jobs_created == 1 and emulator.state.count("create") == 1
    assert (tmp_path / f"{job.id}.mp4").read_bytes() == job.render.result().video.read_bytes()


def test_failed_multipart_upload_leaves_no_partial_object(s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import boto3
    from botocore.exceptions import EndpointConnectionError

    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(16 * 1024 * 1024))
    client = boto3.client("s3")
    parts = {"seen": 0}

    def fail_third_part(**_: object) -> None:
        parts["seen"] += 1
        if parts["seen"] == 3:
            raise EndpointConnectionError(endpoint_url="s3 (injected)")

    client.meta.events.register("before-call.s3.UploadPart", fail_third_part)
    destination = resolve_destination(f"s3://{bucket}/partial.mp4", video_id="v", model="m")
    with pytest.raises((StorageError, TransientError)) as caught:
        store_file(big, destination, sha256="0" * 64, client=client, multipart_threshold=5 * 1024 * 1024)
    assert "partial.mp4" in str(caught.value)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted, nothing billed for storage
    assert big.exists()  # the local copy is kept
