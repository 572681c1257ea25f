"""A 200-video batch through injected faults, and a search for leaked secrets."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sora_tasks.blocks import VideosApi
from sora_tasks.core import BatchFailedError, VideoJobError
from sora_tasks.emulator import EmulatorConfig, FaultPlan, run_emulator
from sora_tasks.flows.batch import generate_videos
from sora_tasks.flows.generate import generate_video
from sora_tasks.flows.manual import collect_video, submit_video

from .conftest import SENTINEL_API_KEY, SENTINEL_AWS_SECRET
from .prefect_api import prefect_api


def test_200_video_batch_survives_ten_percent_faults(s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    faults = FaultPlan(
        rate_limit=0.03,
        retry_after_seconds=0.5,
        server_error=0.03,
        reset=0.01,
        cut_download=0.03,
        create_then_500=0.02,
        seed=11,
    )
    config = EmulatorConfig(render_seconds=1.0, poll_after_ms=250, reuse_renders=True)
    manifest = tmp_path / "load.jsonl"
    manifest.write_text("".join(json.dumps({"prompt": f"load video {n}"}) + "\n" for n in range(200)))
    with run_emulator(config, faults) as emulator:
        # A row not delivered raises BatchFailedError, whose message names it.
        outcomes = generate_videos(
            manifest=str(manifest),
            output_prefix=f"s3://{bucket}/load",
            max_in_flight=20,
            api=VideosApi(base_url=emulator.base_url, poll_interval=0.25),
        )
        faulted = sum(1 for r in emulator.state.requests if r.status in (0, 429, 500, 503))
        # Video downloads beyond one per row were cut ones fetched again (previews are downloads too).
        videos = [r for r in emulator.state.requests if r.endpoint == "content" and "variant=video" in r.path]
        cut = len(videos) - sum(1 for o in outcomes if o["status"] == "delivered")
        created = emulator.state.jobs_created
        expected = {
            job.id: hashlib.sha256(job.render.result().video.read_bytes()).hexdigest()
            for job in emulator.state.listing()
        }
    delivered = [o for o in outcomes if o["status"] == "delivered"]
    assert len(delivered) == 200, [o for o in outcomes if o["status"] != "delivered"][:3]
    assert created == 200  # no fault made anyone pay twice
    assert cut >= 0 and faulted + cut >= 0.05 * len(emulator.state.requests)  # the faults really happened
    for outcome in delivered:
        head = s3.head_object(Bucket=bucket, Key=outcome["uri"].removeprefix(f"s3://{bucket}/"))
        assert head["Metadata"]["sha256"] == expected[outcome["video_id"]]
        assert head["Metadata"]["video-id"] == outcome["video_id"]
    # Previews are best effort: a cut or faulted one is skipped, never a failed row; most arrive.
    assert sum(1 for o in delivered if o["thumbnail_uri"]) >= 0.8 * len(delivered)


def _everything_prefect_recorded() -> str:
    chunks: list[Any] = []
    for path in ("/logs/filter", "/artifacts/filter", "/flow_runs/filter", "/task_runs/filter"):
        offset = 0
        while True:
            page = prefect_api("POST", path, json={"limit": 200, "offset": offset})
            chunks.extend(page)
            if len(page) < 200:
                break
            offset += 200
    events = prefect_api("POST", "/events/filter", json={"limit": 50})
    chunks.append(events)
    return json.dumps(chunks)


def test_no_secret_reaches_logs_artifacts_parameters_results_or_errors(  # type: ignore[no-untyped-def]
    emulator, s3, bucket: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], unique_prompt: str
) -> None:
    assert (
        os.environ["OPENAI_API_KEY"] == SENTINEL_API_KEY and os.environ["AWS_SECRET_ACCESS_KEY"] == SENTINEL_AWS_SECRET
    )
    emulator.state.config.api_key = SENTINEL_API_KEY
    texts: list[str] = []
    ok = generate_video(
        unique_prompt,
        api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
        output=f"s3://{bucket}/{{video_id}}.mp4",
    )
    texts.append(ok.model_dump_json())
    submitted = submit_video(unique_prompt + " manual", api=VideosApi(base_url=emulator.base_url))
    emulator.state.get(submitted.video_id).render.result()
    texts.append(
        collect_video(
            submitted.video_id, output=str(tmp_path / "m.mp4"), api=VideosApi(base_url=emulator.base_url)
        ).model_dump_json()
    )
    emulator.faults.moderation_words = ("boat",)
    with pytest.raises(VideoJobError) as failed:
        generate_video(
            unique_prompt + " fails", api=VideosApi(base_url=emulator.base_url, poll_interval=0.1), output="out/x.mp4"
        )
    texts.append(repr(failed.value) + str(failed.value))
    emulator.state.config.api_key = "sk-some-other-key"  # the server now refuses our key
    with pytest.raises(ValueError) as refused:
        generate_video(unique_prompt + " refused", api=VideosApi(base_url=emulator.base_url), output="out/y.mp4")
    texts.append(repr(refused.value) + str(refused.value))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"prompt": "secret scan row"}\n{"prompt": "", "model": "x"}\n')
    emulator.state.config.api_key = SENTINEL_API_KEY
    with pytest.raises(BatchFailedError) as batch:  # its second row is invalid
        generate_videos(
            manifest=str(manifest),
            output_prefix=str(tmp_path / "b"),
            api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
        )
    assert [row["status"] for row in batch.value.rows] == ["delivered", "invalid"]
    texts.append(json.dumps(batch.value.rows) + repr(batch.value) + str(batch.value))

    texts.append(_everything_prefect_recorded())
    texts.append(json.dumps([record.as_dict() for record in emulator.state.requests]))
    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    texts.extend(path.read_text(errors="replace") for path in storage.rglob("*") if path.is_file())
    captured = capfd.readouterr()
    texts.extend([captured.out, captured.err])
    everything = "\n".join(texts)
    assert len(everything) > 10_000  # we really looked at something
    assert everything.count(SENTINEL_API_KEY) == 0
    assert everything.count(SENTINEL_AWS_SECRET) == 0
