"""The batch flow over a manifest: fan-out with a cap, per-row outcomes, cost guard, shared rate limit."""

from __future__ import annotations

import csv
import io
import json
import logging
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from sora_tasks.blocks import VideosApi
from sora_tasks.core.api.pricing import estimate_cost
from sora_tasks.core.api.request import VideoRequest
from sora_tasks.core.errors import BatchFailedError
from sora_tasks.core.jobs.manifest import join_output
from sora_tasks.flows.batch import generate_videos

from .media import api_requests, probe_mp4, sha256
from .prefect_api import prefect_api


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def peak_jobs_in_flight(emulator: Any) -> int:
    """Most jobs rendering at once: from each job's create to the answer that first told a client it ended.

    That answer (a retrieve, or a page of the job list the batch's watcher reads) comes
    before the client gives the job's slot back, so this never overstates the peak.
    Downloads of finished jobs may overlap new renders; max_in_flight caps renders.
    """
    events = []
    for job in emulator.state.listing():
        events += [(job.created_at, 1), (job.reported_ended_at or float("inf"), -1)]
    peak = alive = 0
    for _, change in sorted(events):
        alive += change
        peak = max(peak, alive)
    return peak


def test_batch_reports_every_row_and_caps_jobs_in_flight(  # type: ignore[no-untyped-def]
    emulator, s3, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    emulator.faults.moderation_words = ("forbidden",)
    emulator.state.config.render_seconds = 1.0
    tag = uuid.uuid4().hex[:6]
    photo = tmp_path / "product.png"
    Image.new("RGB", (800, 800), (240, 10, 10)).save(photo)
    manifest = write_jsonl(
        tmp_path / "batch.jsonl",
        [
            {"prompt": f"row one {tag}"},
            {"prompt": f"row two {tag}", "duration": 8, "resolution": "720x1280"},
            {"prompt": f"row three {tag}", "resolution": "1920x1080"},  # invalid: never submitted
            {"prompt": f"a forbidden row {tag}"},  # fails on the server
            {"prompt": f"row five {tag}", "image": str(photo), "output": "products/{video_id}.mp4"},
            {"prompt": f"row six {tag}", "model": "sora-2-pro", "resolution": "1792x1024", "seconds": "4"},
            {"prompt": f"row seven {tag}"},
        ],
    )
    with pytest.raises(BatchFailedError) as raised:
        generate_videos(
            manifest=manifest,
            output_prefix=f"s3://{bucket}/batch",
            max_in_flight=2,
            api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
        )
    error = raised.value
    outcomes = error.rows
    assert isinstance(error, RuntimeError) and (error.delivered, error.invalid, error.failed) == (5, 1, 1)
    moderated = outcomes[3]["video_id"]
    assert str(error) == (
        "2 of 7 rows not delivered: row 3 invalid (resolution '1920x1080' is not supported by sora-2 (the Videos API "
        f"offers no 1080p size); allowed: 720x1280, 1280x720), row 4 failed (video {moderated}, ModerationBlockedError: "
        "moderation_blocked: Your request was blocked by our moderation system.)"
    )
    # Each bad row is logged once by the flow, with its reason and (when it has one) its video id.
    logged = [r.getMessage() for r in caplog.records if r.name == "prefect.flow_runs" and r.levelno == logging.WARNING]
    assert [m for m in logged if m.startswith("row ")] == [
        f"row 3 invalid: {outcomes[2]['error']}",
        f"row 4 failed (video {moderated}): {outcomes[3]['error']}",
    ]
    assert "5 of 7 rows delivered" in caplog.text
    assert [o["row"] for o in outcomes] == [1, 2, 3, 4, 5, 6, 7]
    assert [o["status"] for o in outcomes] == [
        "delivered",
        "delivered",
        "invalid",
        "failed",
        "delivered",
        "delivered",
        "delivered",
    ]
    assert "1920x1080" in outcomes[2]["error"] and "moderation_blocked" in outcomes[3]["error"]
    assert (outcomes[2]["code"], outcomes[3]["code"]) == ("invalid_row", "moderation_blocked")
    assert outcomes[3]["video_id"].startswith("video_")  # a failed row keeps its id
    assert outcomes[4]["uri"] == f"s3://{bucket}/batch/products/{outcomes[4]['video_id']}.mp4"
    for outcome in outcomes:
        if outcome["status"] == "delivered":
            key = outcome["uri"].removeprefix(f"s3://{bucket}/")
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert sha256(body) == sha256(emulator.state.get(outcome["video_id"]).render.result().video.read_bytes())
    assert (
        probe_mp4(s3.get_object(Bucket=bucket, Key=f"batch/{outcomes[5]['video_id']}.mp4")["Body"].read()).width == 1792
    )
    assert emulator.state.jobs_created == 6 and emulator.state.count("create") == 6
    assert peak_jobs_in_flight(emulator) <= 2
    assert outcomes[1]["cost_usd"] == pytest.approx(0.8) and outcomes[5]["cost_usd"] == pytest.approx(2.0)


def test_csv_manifest_on_s3_all_delivered(emulator, s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["prompt", "duration", "resolution", "output"])
    writer.writeheader()
    tag = uuid.uuid4().hex[:6]
    for n in range(4):
        writer.writerow(
            {"prompt": f"csv row {n} {tag}", "duration": 4, "resolution": "1280x720", "output": f"clip-{n}.mp4"}
        )
    s3.put_object(Bucket=bucket, Key="manifests/today.csv", Body=buffer.getvalue().encode())
    state = generate_videos(
        manifest=f"s3://{bucket}/manifests/today.csv",
        output_prefix=str(tmp_path / "out"),
        api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
        return_state=True,
    )
    outcomes = state.result()
    assert [o["status"] for o in outcomes] == ["delivered"] * 4
    # Each video with its previews beside it (on by default), named in its row.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"clip-{n}{suffix}" for n in range(4) for suffix in (".mp4", ".thumbnail.webp", ".spritesheet.jpg")
    )
    for n, outcome in enumerate(outcomes):
        assert outcome["thumbnail_uri"] == str(tmp_path / "out" / f"clip-{n}.thumbnail.webp")
        assert outcome["spritesheet_uri"] == str(tmp_path / "out" / f"clip-{n}.spritesheet.jpg")
    # The keyed summary (a thumbnail per row, the totals) and the keyed table of every row.
    artifacts = prefect_api(
        "POST",
        "/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [str(state.state_details.flow_run_id)]}}, "limit": 50},
    )
    keyed = {artifact["key"]: artifact for artifact in artifacts if artifact["key"]}
    assert set(keyed) == {"generate-videos", "generate-videos-table"}
    summary = keyed["generate-videos"]["data"]
    assert "**4 of 4 delivered**" in summary and "**16 s paid**" in summary and "**estimated $1.60**" in summary
    for n, outcome in enumerate(outcomes, start=1):
        assert (
            f"| {n} | ![row {n}]({outcome['thumbnail_uri']}) | [{outcome['video_id']}]({outcome['uri']}) |" in summary
        )
    assert [row["row"] for row in json.loads(keyed["generate-videos-table"]["data"])] == [1, 2, 3, 4]


def test_an_s3_batch_rerun_knows_every_row_delivered_from_its_objects(  # type: ignore[no-untyped-def]
    emulator, s3, bucket: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    rows = [{"prompt": f"s3 rerun {n} {tag}"} for n in range(3)] + [{"prompt": f"fixed {tag}", "output": "fixed.mp4"}]
    manifest = write_jsonl(tmp_path / "rerun.jsonl", rows)
    prefix = f"s3://{bucket}/rerun-{tag}"
    api = VideosApi(base_url=emulator.base_url, poll_interval=0.1)
    first = generate_videos(manifest=manifest, output_prefix=prefix, api=api)
    assert [row["how"] for row in first] == ["created"] * 4
    assert first[3]["uri"] == f"{prefix}/fixed.mp4"
    # One receipt write per row, when its create answered: the delivery is not written
    # back, as each object carries the request's fingerprint in its metadata.
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=".prefect-sora/receipts/")["Contents"]
    receipts = [item for item in listed if "/claims/" not in item["Key"]]  # the claims beside them are apart
    recorded = [json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()) for item in receipts]
    ours = [receipt for receipt in recorded if receipt["video_id"] in {row["video_id"] for row in first}]
    assert len(ours) == 4 and all(receipt["delivered_uri"] is None for receipt in ours)

    reads_before = emulator.state.count("retrieve") + emulator.state.count("list")
    again = generate_videos(manifest=manifest, output_prefix=prefix, api=api)
    assert [row["how"] for row in again] == ["already delivered"] * 4
    assert emulator.state.jobs_created == 4
    assert emulator.state.count("retrieve") + emulator.state.count("list") == reads_before  # no API call at all
    for before, after in zip(first, again, strict=True):
        assert (after["video_id"], after["uri"]) == (before["video_id"], before["uri"])
        # The previews beside each video, found in the batch's listing of its prefix.
        assert (after["thumbnail_uri"], after["spritesheet_uri"]) == (
            before["thumbnail_uri"],
            before["spritesheet_uri"],
        )
        assert after["thumbnail_uri"].endswith(".thumbnail.webp")


def test_row_outliving_the_sdk_retries_is_retried_whole_without_a_second_create(  # type: ignore[no-untyped-def]
    emulator, tmp_path: Path
) -> None:
    # Four 500s exhaust one status poll (the SDK's first try and its 3 retries); the
    # row's own retry then starts over, and its create answers from the cache.
    emulator.faults.inject("500", endpoint="retrieve", count=4)
    manifest = write_jsonl(tmp_path / "flaky.jsonl", [{"prompt": f"flaky poll {uuid.uuid4().hex[:6]}"}])
    outcomes = generate_videos(
        manifest=manifest,
        output_prefix=str(tmp_path / "o"),
        api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
    )
    assert [o["status"] for o in outcomes] == ["delivered"]
    assert emulator.state.count("create") == 1 and emulator.state.jobs_created == 1
    assert emulator.state.count("retrieve", status=500) == 4
    delivered = Path(outcomes[0]["uri"]).read_bytes()
    assert delivered == emulator.state.get(outcomes[0]["video_id"]).render.result().video.read_bytes()


def test_cost_guard_refuses_before_any_request(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = write_jsonl(
        tmp_path / "big.jsonl", [{"prompt": f"pro {n}", "model": "sora-2-pro", "seconds": 12} for n in range(10)]
    )
    with pytest.raises(ValueError, match=r"estimated cost \$36.00 for 10 videos exceeds max_cost_usd \$5.00"):
        generate_videos(manifest=manifest, max_cost_usd=5.0, api=VideosApi(base_url=emulator.base_url))
    assert api_requests(emulator) == []
    # Quality retries count too: $36 fits a $40 limit, but not with one more job for every row.
    with pytest.raises(ValueError, match=r"quality retry=1 the batch may cost up to \$72.00 .* max_cost_usd \$40.00"):
        generate_videos(
            manifest=manifest, max_cost_usd=40.0, quality="retry=1", api=VideosApi(base_url=emulator.base_url)
        )
    assert api_requests(emulator) == []


def test_bad_manifests(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="no such file"):
        generate_videos(manifest=str(tmp_path / "missing.jsonl"), api=VideosApi(base_url=emulator.base_url))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="has no rows"):
        generate_videos(manifest=str(tmp_path / "empty.jsonl"), api=VideosApi(base_url=emulator.base_url))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"prompt": "ok"}\nnot json\n[1, 2]\n{"prompt": "x", "colour": "red"}\n{"prompt": ""}\n')
    # As a deployment run would: a Failed state, its message naming the first bad rows.
    state = generate_videos(
        manifest=str(mixed),
        output_prefix=str(tmp_path / "o"),
        api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
        return_state=True,
    )
    assert state.is_failed() and state.message is not None
    assert "BatchFailedError: 4 of 5 rows not delivered: row 2 invalid (line 2 is not JSON" in state.message
    assert state.message.endswith(" and 1 more")
    error = state.result(raise_on_failure=False)
    assert isinstance(error, BatchFailedError) and (error.delivered, error.invalid, error.failed) == (1, 4, 0)
    outcomes = error.rows
    assert [o["status"] for o in outcomes] == ["delivered", "invalid", "invalid", "invalid", "invalid"]
    assert "not JSON" in outcomes[1]["error"] and "unknown column" in outcomes[3]["error"]
    # Prefect pickles the exception into its result store: it must come back whole.
    copy = pickle.loads(pickle.dumps(error))
    assert copy.rows == outcomes and str(copy) == str(error) and copy.invalid == 4


def test_shared_rate_limit_spaces_out_creates(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = f"sora-api-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=1, slot_decay_per_second=2.0)
        )
    tag = uuid.uuid4().hex[:6]
    manifest = write_jsonl(tmp_path / "rl.jsonl", [{"prompt": f"limited {n} {tag}"} for n in range(5)])
    generate_videos(
        manifest=manifest,
        output_prefix=str(tmp_path / "o"),
        max_in_flight=5,
        api=VideosApi(base_url=emulator.base_url, poll_interval=0.1, rate_limit_name=name),
    )
    creates = sorted(r.at for r in emulator.state.requests if r.endpoint == "create")
    assert len(creates) == 5
    # One slot decaying at 2/s: five creates need about two seconds, never a burst.
    assert creates[-1] - creates[0] >= 1.5, creates


def test_pricing_and_output_joining() -> None:
    requests = [
        VideoRequest.build("a", model="sora-2", duration=8),
        VideoRequest.build("b", model="sora-2-pro", duration=4, resolution="1024x1792"),
        VideoRequest.build("c", model="open-video", duration=4, allow_unknown_models=True),
    ]
    assert estimate_cost(requests) == (2.8, ["open-video"])
    assert estimate_cost(requests, {"open-video": 0.01, "sora-2": 0.2}) == (1.64, ["sora-2-pro"])
    assert join_output("s3://b/p/", "x/{video_id}.mp4") == "s3://b/p/x/{video_id}.mp4"
    assert join_output("s3://b/p", None) == "s3://b/p/{video_id}.mp4"
    assert join_output("s3://b/p", "s3://other/k.mp4") == "s3://other/k.mp4"


def test_batch_reads_its_manifest_and_writes_through_an_s3bucket_block(emulator, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    from prefect_aws import AwsCredentials, S3Bucket

    rows = [{"prompt": f"bucket block row {n} {uuid.uuid4().hex[:6]}"} for n in range(2)]
    s3.put_object(Bucket=bucket, Key="team/in/today.jsonl", Body="\n".join(map(json.dumps, rows)).encode())
    block = S3Bucket(bucket_name=bucket, bucket_folder="team", credentials=AwsCredentials())
    outcomes = generate_videos(
        manifest="in/today.jsonl",
        output_prefix="out/{date}",
        api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
        destination=block,
    )
    assert [o["status"] for o in outcomes] == ["delivered", "delivered"]
    for outcome in outcomes:
        assert outcome["uri"].startswith(f"s3://{bucket}/team/out/") and outcome["uri"].endswith(".mp4")
        key = outcome["uri"].removeprefix(f"s3://{bucket}/")
        assert probe_mp4(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).frames == 96
    with pytest.raises(ValueError, match="manifest is a key inside its bucket"):
        generate_videos(manifest=f"s3://{bucket}/team/in/today.jsonl", destination=block)
