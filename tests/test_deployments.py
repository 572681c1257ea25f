"""prefect.yaml's deployments on a real Prefect server, run by a real process worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sora_tasks.deployments.serve import build_deployments
from sora_tasks.deployments.triggers import batch_video_uploaded

from .media import probe_mp4
from .prefect_api import prefect_api
from .waiting import wait_until_completed

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def prefect_server(prefect_server_env: dict[str, str], s3_endpoint: str) -> dict[str, str]:
    """The module's server with prefect.yaml's work pool and deployments; the env its CLI and worker run with.

    Built after the S3 server so the worker inherits its endpoint and credentials.
    """
    env = {**os.environ, **prefect_server_env, "SORA_PROJECT_DIR": str(PROJECT)}
    prefect(env, "work-pool", "create", "sora", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--all")
    return env


def prefect(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def api(env: dict[str, str], path: str, body: dict | None = None) -> object:
    return prefect_api("POST", path, json=body or {}, api_url=env["PREFECT_API_URL"])


def run_deployment(env: dict[str, str], name: str, **parameters: object) -> str:
    deployment = prefect_api("GET", f"/deployments/name/{name}", api_url=env["PREFECT_API_URL"])
    created = api(env, f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})
    assert isinstance(created, dict)
    return str(created["id"])


def work_once(env: dict[str, str]) -> str:
    """Start a process worker that runs what is scheduled now, then exits; returns its log."""
    done = subprocess.run(
        [str(BIN / "prefect"), "worker", "start", "--pool", "sora", "--run-once"],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout + done.stderr


def work_until_ended(env: dict[str, str], flow_run_id: str, *, timeout: float = 150) -> str:
    """Run workers once after another until ``flow_run_id`` has ended; returns their logs.

    A deployment with a concurrency limit (collect-pending's is 1) sends a run that finds
    the slot taken, by one of its own scheduled runs, say, back to Scheduled about 30 s
    later (AwaitingConcurrencySlot): one worker pass is then not enough.
    """
    deadline = time.monotonic() + timeout
    logs = work_once(env)
    while flow_run_state(env, flow_run_id) not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        if time.monotonic() > deadline:
            break
        time.sleep(2)
        logs += work_once(env)
    return logs


def flow_run_state(env: dict[str, str], flow_run_id: str) -> str:
    run = prefect_api("GET", f"/flow_runs/{flow_run_id}", api_url=env["PREFECT_API_URL"])
    return str(run["state"]["type"])


def test_all_deployments_are_registered_with_their_schedules(prefect_server: dict[str, str]) -> None:
    deployments = api(prefect_server, "/deployments/filter", {"limit": 50})
    assert isinstance(deployments, list)
    names = {(d["name"], d["entrypoint"]) for d in deployments}
    assert names == {
        ("adhoc", "sora_tasks/flows/generate.py:generate_video"),
        ("remix", "sora_tasks/flows/derive.py:remix_video"),
        ("edit", "sora_tasks/flows/derive.py:edit_video"),
        ("extend", "sora_tasks/flows/derive.py:extend_video"),
        ("storyboard", "sora_tasks/flows/storyboard.py:storyboard"),
        ("review", "sora_tasks/flows/review.py:review_video"),
        ("review-timeout", "sora_tasks/flows/review.py:expire_review"),
        ("submit", "sora_tasks/flows/manual.py:submit_video"),
        ("collect", "sora_tasks/flows/manual.py:collect_video"),
        ("collect-pending", "sora_tasks/flows/deferred.py:collect_pending"),
        ("nightly-batch", "sora_tasks/flows/batch.py:generate_videos"),
        ("shard", "sora_tasks/flows/batch.py:generate_videos"),
        ("after-upload", "sora_tasks/flows/downstream.py:video_uploaded"),
    }
    schedules = {d["name"]: d["schedules"] for d in deployments}
    assert schedules["collect-pending"][0]["schedule"]["interval"] == 60
    assert schedules["nightly-batch"][0]["schedule"]["cron"] == "0 2 * * *"
    assert not schedules["nightly-batch"][0]["active"]  # waits for a real manifest
    assert {d.name for d in build_deployments()} == {name for name, _ in names}  # serve.py matches


def test_deploying_creates_zombie_detection_once_and_keeps_a_tuned_one(prefect_server: dict[str, str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            # `prefect deploy --all` ran prefect.yaml's build step once per deployment: one automation.
            [zombies] = client.read_automations_by_name("sora-crash-zombie-flow-runs")
            assert zombies.enabled and zombies.trigger.within.total_seconds() == 600  # type: ignore[union-attr]
            assert [action.type for action in zombies.actions] == ["change-flow-run-state"]
            # Someone allows a longer silence in the UI; deploying again must not undo it.
            tuned = AutomationCore.model_validate(
                {**zombies.model_dump(include={"name", "description", "enabled", "actions"}), "trigger": {
                    **zombies.trigger.model_dump(), "within": 1800}}
            )  # fmt: skip
            client.update_automation(zombies.id, tuned)
        prefect(prefect_server, "--no-prompt", "deploy", "-n", "adhoc")
        with get_client(sync_client=True) as client:
            [kept] = client.read_automations_by_name("sora-crash-zombie-flow-runs")
    assert kept.id == zombies.id and kept.trigger.within.total_seconds() == 1800  # type: ignore[union-attr]


def test_the_shipped_trigger_is_the_same_in_prefect_yaml_and_serve() -> None:
    import yaml

    shipped = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    [after_upload] = [d for d in shipped["deployments"] if d["name"] == "after-upload"]
    [in_yaml] = after_upload["triggers"]
    [served] = next(d for d in build_deployments() if d.name == "after-upload").triggers
    assert type(served).model_validate(in_yaml).model_dump() == served.model_dump()
    assert served.model_dump() == batch_video_uploaded().model_dump()


def test_adhoc_deployment_runs_on_a_worker(prefect_server: dict[str, str], emulator, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    flow_run_id = run_deployment(
        prefect_server,
        "generate-video/adhoc",
        video="A deployed fox",
        api={"base_url": emulator.base_url, "poll_interval": 0.2},
        output=f"s3://{bucket}/{{video_id}}.mp4",
    )
    log = work_once(prefect_server)
    assert flow_run_state(prefect_server, flow_run_id) == "COMPLETED", log
    [job] = emulator.state.listing()
    body = s3.get_object(Bucket=bucket, Key=f"{job.id}.mp4")["Body"].read()
    assert probe_mp4(body).frames == 96
    artifacts = api(prefect_server, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    assert isinstance(artifacts, list) and len(artifacts) == 3 and any(job.id in str(a["data"]) for a in artifacts)
    assert [a["key"] for a in artifacts if a["key"]] == ["generate-video-adhoc"]  # keyed per deployment
    wanted = {"sora.video.created", "sora.video.completed", "sora.video.uploaded"}
    assert recorded_events(prefect_server, job.id, wanted) == wanted
    # The upload names its flow run, its deployment and the object, for automations to match on.
    found = api(prefect_server, "/events/filter", {"filter": {"event": {"name": ["sora.video.uploaded"]}}, "limit": 5})
    assert isinstance(found, dict)
    [uploaded] = [e for e in found["events"] if e["resource"]["prefect.resource.id"] == f"sora.video.{job.id}"]
    related = {r["prefect.resource.role"]: r for r in uploaded["related"]}
    assert related["flow-run"]["prefect.resource.id"] == f"prefect.flow-run.{flow_run_id}"
    assert related["deployment"]["prefect.resource.name"] == "adhoc"
    assert related["object"]["prefect.resource.id"] == f"s3://{bucket}/{job.id}.mp4"


def recorded_events(env: dict[str, str], video_id: str, wanted: set[str]) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while not wanted <= seen and time.monotonic() < deadline:
        found = api(env, "/events/filter", {"filter": {"resource": {"id": [f"sora.video.{video_id}"]}}, "limit": 50})
        assert isinstance(found, dict)
        seen = {event["event"] for event in found["events"]}
        time.sleep(0.5)
    return seen


def test_manual_mode_through_deployments(prefect_server: dict[str, str], emulator, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    submit_id = run_deployment(
        prefect_server, "submit-video/submit", video="Manual through deployments", api={"base_url": emulator.base_url}
    )
    log = work_once(prefect_server)
    assert flow_run_state(prefect_server, submit_id) == "COMPLETED", log
    [job] = emulator.state.listing()
    wait_until_completed(emulator.state, job)
    collect_id = run_deployment(
        prefect_server,
        "collect-video/collect",
        video_id=job.id,
        api={"base_url": emulator.base_url},
        output=f"s3://{bucket}/manual/{{video_id}}.mp4",
    )
    log = work_once(prefect_server)
    assert flow_run_state(prefect_server, collect_id) == "COMPLETED", log
    assert s3.head_object(Bucket=bucket, Key=f"manual/{job.id}.mp4")["ContentType"] == "video/mp4"


def test_batch_deployment(prefect_server: dict[str, str], emulator, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    rows = "\n".join(json.dumps({"prompt": f"batch row {n} via deployment"}) for n in range(3))
    s3.put_object(Bucket=bucket, Key="manifests/nightly.jsonl", Body=rows.encode())
    flow_run_id = run_deployment(
        prefect_server,
        "generate-videos/nightly-batch",
        manifest=f"s3://{bucket}/manifests/nightly.jsonl",
        output_prefix=f"s3://{bucket}/nightly",
        api={"base_url": emulator.base_url, "poll_interval": 0.2},
    )
    log = work_once(prefect_server)
    assert flow_run_state(prefect_server, flow_run_id) == "COMPLETED", log
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="nightly/")["Contents"])
    jobs = emulator.state.listing()
    expected = [
        f"nightly/{job.id}{suffix}" for job in jobs for suffix in (".mp4", ".spritesheet.jpg", ".thumbnail.webp")
    ]
    assert keys == sorted(expected) and len(jobs) == 3

    # The trigger prefect.yaml ships (`prefect deploy` made it an automation): one run of the
    # downstream deployment per uploaded video, with the event's URIs as its parameters.
    downstream = downstream_runs(prefect_server, 3)
    assert sorted(run["parameters"]["uri"] for run in downstream) == sorted(
        f"s3://{bucket}/nightly/{job.id}.mp4" for job in jobs
    )
    for run in downstream:
        video_id = run["parameters"]["video_id"]
        assert run["parameters"]["thumbnail_uri"] == f"s3://{bucket}/nightly/{video_id}.thumbnail.webp"
        assert run["parameters"]["model"] == "sora-2"
    log = work_once(prefect_server)  # the downstream runs are real runs: a worker runs them
    assert [flow_run_state(prefect_server, run["id"]) for run in downstream] == ["COMPLETED"] * 3, log


def downstream_runs(env: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The after-upload deployment's flow runs, once ``count`` exist (the trigger fires as events arrive)."""
    deployment = prefect_api("GET", "/deployments/name/video-uploaded/after-upload", api_url=env["PREFECT_API_URL"])
    deadline = time.monotonic() + 60
    while True:
        runs = api(env, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}})
        assert isinstance(runs, list)
        if len(runs) >= count or time.monotonic() > deadline:
            assert len(runs) == count, runs
            return runs
        time.sleep(0.5)


def test_batch_deployment_with_a_bad_row_ends_failed(prefect_server: dict[str, str], emulator, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    rows = [{"prompt": "a good row via deployment"}, {"prompt": "a bad row", "resolution": "1920x1080"}]
    s3.put_object(Bucket=bucket, Key="manifests/bad.jsonl", Body="\n".join(map(json.dumps, rows)).encode())
    flow_run_id = run_deployment(
        prefect_server,
        "generate-videos/nightly-batch",
        manifest=f"s3://{bucket}/manifests/bad.jsonl",
        output_prefix=f"s3://{bucket}/nightly",
        api={"base_url": emulator.base_url, "poll_interval": 0.2},
    )
    log = work_once(prefect_server)
    run = prefect_api("GET", f"/flow_runs/{flow_run_id}", api_url=prefect_server["PREFECT_API_URL"])
    assert run["state"]["type"] == "FAILED", log  # the exception is the flow's own: Failed, not Crashed
    message = run["state"]["message"]
    assert "BatchFailedError: 1 of 2 rows not delivered: row 2 invalid (resolution '1920x1080'" in message
    [job] = emulator.state.listing()  # the good row was still delivered
    assert s3.head_object(Bucket=bucket, Key=f"nightly/{job.id}.mp4")["ContentType"] == "video/mp4"
    warnings = row_warnings(prefect_server, flow_run_id)
    assert len(warnings) == 1 and warnings[0].startswith("row 2 invalid: resolution '1920x1080' is not supported")


def row_warnings(env: dict[str, str], flow_run_id: str) -> list[str]:
    """The flow run's warnings about rows, as stored by the Prefect API (they arrive in batches)."""
    deadline = time.monotonic() + 30
    while True:
        logs = api(env, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
        assert isinstance(logs, list)
        found = [entry["message"] for entry in logs if entry["level"] == 30 and entry["message"].startswith("row ")]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_async_mode_through_deployments(prefect_server: dict[str, str], emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 15.0  # outlasts the submit run on a busy machine
    ledger = str(tmp_path / "ledger")
    submit_id = run_deployment(
        prefect_server,
        "submit-video/submit",
        video="Submitted through a deployment",
        api={"base_url": emulator.base_url},
        output=str(tmp_path / "{video_id}.mp4"),
        ledger=ledger,
    )
    log = work_once(prefect_server)
    assert flow_run_state(prefect_server, submit_id) == "COMPLETED", log
    [job] = emulator.state.listing()
    assert emulator.state.describe(job)["status"] in ("queued", "in_progress")
    running = api(prefect_server, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}})
    assert running == []  # the render goes on with no flow run (and no worker) waiting for it
    emulator.state.config.render_seconds = 0.0
    wait_until_completed(emulator.state, job)
    # The sweep calls its own server (its api parameter): records for any other are skipped.
    sweep_id = run_deployment(
        prefect_server, "collect-pending/collect-pending", ledger=ledger, api={"base_url": emulator.base_url}
    )
    log = work_until_ended(prefect_server, sweep_id)
    assert flow_run_state(prefect_server, sweep_id) == "COMPLETED", log
    assert (tmp_path / f"{job.id}.mp4").exists() and list((tmp_path / "ledger").glob("*.json")) == []
