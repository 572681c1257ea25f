"""Wait modes as flow-run semantics: manual (submit/status/collect) and async (ledger + sweep)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sora_tasks.core import StorageError, VideoExpiredError, VideoJobError, VideoNotReadyError, VideoTimeoutError
from sora_tasks.core.spec import VideoSpec
from sora_tasks.core.storage.ledger import Ledger
from sora_tasks.flows.deferred import collect_pending
from sora_tasks.flows.generate import generate_video
from sora_tasks.flows.hooks import seed_callbacks
from sora_tasks.flows.manual import collect_video, submit_video, video_status

from .apis import api_for
from .media import api_requests, sha256
from .prefect_api import prefect_api, sora_events


def running_flow_runs() -> list[dict[str, Any]]:
    return prefect_api(  # type: ignore[no-any-return]
        "POST",
        "/flow_runs/filter",
        json={"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "SCHEDULED"]}}}, "limit": 50},
    )


def wait_until_rendered(emulator: Any, video_id: str) -> None:
    job = emulator.state.get(video_id)
    job.render.result(timeout=60)
    deadline = time.monotonic() + 60
    while emulator.state.describe(job)["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, f"{video_id} never finished"
        time.sleep(0.05)


def test_manual_mode_submit_status_collect(emulator, s3, bucket: str, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 60
    api = api_for(emulator)
    submitted = submit_video(VideoSpec(prompt=unique_prompt, duration=8), api=api)
    assert submitted.video_id.startswith("video_") and submitted.duration == 8
    status = video_status(submitted.video_id, api=api)
    assert status["status"] in ("queued", "in_progress") and status["id"] == submitted.video_id
    assert (status["duration"], status["resolution"]) == (8, "1280x720")
    with pytest.raises(VideoNotReadyError, match="collect it later"):
        collect_video(submitted.video_id, output=f"s3://{bucket}/m.mp4", api=api)
    emulator.state.config.render_seconds = 0.0
    wait_until_rendered(emulator, submitted.video_id)
    result = collect_video(submitted.video_id, output=f"s3://{bucket}/{{video_id}}.mp4", api=api)
    body = s3.get_object(Bucket=bucket, Key=f"{submitted.video_id}.mp4")["Body"].read()
    assert sha256(body) == result.sha256 and (result.duration, result.resolution) == (8, "1280x720")
    assert emulator.state.jobs_created == 1


def test_collect_refuses_failed_and_expired_videos(emulator, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.moderation_words = ("boat",)
    api = api_for(emulator)
    failed = submit_video(unique_prompt, api=api)
    wait_until_rendered(emulator, failed.video_id)
    with pytest.raises(VideoJobError, match="moderation_blocked"):
        collect_video(failed.video_id, output="out/x.mp4", api=api)
    emulator.faults.moderation_words = ()
    emulator.state.config.asset_ttl_seconds = 0.0
    old = submit_video(unique_prompt + " later", api=api)
    wait_until_rendered(emulator, old.video_id)
    time.sleep(1.1)
    with pytest.raises(VideoExpiredError, match="expired at"):
        collect_video(old.video_id, output="out/x.mp4", api=api)


def test_async_mode_holds_no_flow_run_while_rendering(emulator, s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 10.0  # outlasts three submits on a busy machine
    ledger = f"s3://{bucket}/sora-ledger/"  # shared by every worker in a real deployment
    started = time.monotonic()
    ids = [
        submit_video(
            f"async video {n} {tmp_path.name}",
            output=f"s3://{bucket}/async/{{video_id}}.mp4",
            api=api_for(emulator),
            ledger=ledger,
        ).video_id
        for n in range(3)
    ]
    submit_seconds = time.monotonic() - started
    job = emulator.state.get(ids[-1])
    assert emulator.state.describe(job)["status"] in ("queued", "in_progress")
    assert running_flow_runs() == []  # nobody is waiting for the renders
    assert [record.video_id for record in Ledger(ledger).pending()] == ids

    early = collect_pending(api=api_for(emulator), ledger=ledger)  # a sweep while rendering finds nothing to do
    assert {row["outcome"] for row in early} == {"rendering"}
    for video_id in ids:
        wait_until_rendered(emulator, video_id)
    rows = collect_pending(api=api_for(emulator), ledger=ledger)
    assert [row["outcome"] for row in rows] == ["delivered"] * 3
    for video_id in ids:
        body = s3.get_object(Bucket=bucket, Key=f"async/{video_id}.mp4")["Body"].read()
        assert body == emulator.state.get(video_id).render.result().video.read_bytes()
    assert Ledger(ledger).pending() == [] and emulator.state.jobs_created == 3
    assert submit_seconds < 3 * 10.0  # submitting did not wait for any render


def test_async_sweep_reports_failures_and_keeps_going(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.moderation_words = ("blocked",)
    ledger = str(tmp_path / "ledger")
    api = api_for(emulator)
    bad = submit_video("blocked one", output=str(tmp_path / "{video_id}.mp4"), api=api, ledger=ledger)
    good = submit_video("fine one", output=str(tmp_path / "{video_id}.mp4"), api=api, ledger=ledger)
    for video_id in (bad.video_id, good.video_id):
        wait_until_rendered(emulator, video_id)
    outcomes = {row["video_id"]: row for row in collect_pending(api=api_for(emulator), ledger=ledger)}
    assert outcomes[bad.video_id]["outcome"] == "failed" and "moderation_blocked" in outcomes[bad.video_id]["detail"]
    assert outcomes[good.video_id]["outcome"] == "delivered" and (tmp_path / f"{good.video_id}.mp4").exists()
    assert Ledger(ledger).pending() == []


def test_ledger_requires_an_output(emulator) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="output is required with ledger"):
        submit_video("p", api=api_for(emulator), ledger="/tmp/ledger")
    assert api_requests(emulator) == []


def test_a_timed_out_sync_run_is_recorded_and_delivered_later(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 30
    ledger = str(tmp_path / "ledger")
    output = str(tmp_path / "late" / "{video_id}.mp4")
    with pytest.raises(VideoTimeoutError) as caught:
        generate_video(
            unique_prompt,
            api=api_for(emulator, max_wait=0.3, poll_interval=0.1),
            output=output,
            ledger=ledger,
        )
    video_id = caught.value.video_id
    [record] = Ledger(ledger).pending()
    assert (record.video_id, record.output, record.reason) == (video_id, output, "VideoTimeoutError")
    emulator.state.config.render_seconds = 0.0
    wait_until_rendered(emulator, video_id)
    [row] = collect_pending(api=api_for(emulator), ledger=ledger)
    assert row["outcome"] == "delivered" and (tmp_path / "late" / f"{video_id}.mp4").exists()
    assert emulator.state.jobs_created == 1


def test_a_failed_upload_keeps_the_video_and_is_collected_later(
    emulator, s3, tmp_path: Path, unique_prompt: str
) -> None:  # type: ignore[no-untyped-def]
    bucket = f"late-{tmp_path.name[-8:].lower().replace('_', '-')}"
    s3.create_bucket(Bucket=bucket)
    # The bucket vanishes after the free pre-flight check: the upload fails, the video must survive.
    emulator.state.config.render_seconds = 1.0

    def drop_bucket_while_rendering() -> None:
        time.sleep(0.5)
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)

    import threading

    dropper = threading.Thread(target=drop_bucket_while_rendering)
    dropper.start()
    with pytest.raises(StorageError) as caught:
        generate_video(
            unique_prompt,
            api=api_for(emulator, poll_interval=0.1),
            output=f"s3://{bucket}/videos/{{video_id}}.mp4",
            ledger=str(tmp_path / "ledger"),
        )
    dropper.join()
    error = caught.value
    assert error.video_id and error.local_path and Path(error.local_path).exists()
    assert f"sora-video collect {error.video_id}` can deliver it until" in str(error)
    assert Path(error.local_path).read_bytes() == emulator.state.get(error.video_id).render.result().video.read_bytes()
    [record] = Ledger(str(tmp_path / "ledger")).pending()
    assert record.video_id == error.video_id
    s3.create_bucket(Bucket=bucket)
    [row] = collect_pending(api=api_for(emulator), ledger=str(tmp_path / "ledger"))
    assert row["outcome"] == "delivered"
    assert s3.head_object(Bucket=bucket, Key=f"videos/{error.video_id}.mp4")["ContentLength"] > 0


def test_seed_callbacks_as_state_hooks(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    completed: list[Any] = []
    errors: list[str] = []
    flow = generate_video.with_options(**seed_callbacks(on_complete=completed.append, on_error=errors.append))
    api = api_for(emulator, poll_interval=0.1)
    result = flow(unique_prompt, api=api, output=str(tmp_path / "a.mp4"))
    assert completed == [result] and errors == []
    emulator.faults.moderation_words = ("boat",)
    with pytest.raises(VideoJobError):
        flow(unique_prompt + " 2", api=api, output=str(tmp_path / "b.mp4"))
    assert len(errors) == 1 and "moderation_blocked" in errors[0]


def test_lifecycle_events_for_automations(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    api = api_for(emulator, poll_interval=0.1)
    result = generate_video(unique_prompt, api=api, output=str(tmp_path / "e.mp4"))
    wanted = {"sora.video.created", "sora.video.completed", "sora.video.uploaded"}
    assert sora_events(result.video_id, wanted) == wanted
    emulator.faults.moderation_words = ("boat",)
    with pytest.raises(VideoJobError) as caught:
        generate_video(unique_prompt + "!", api=api, output="out/x.mp4")
    failed = {"sora.video.created", "sora.video.failed"}
    assert sora_events(caught.value.video_id, failed) == failed
