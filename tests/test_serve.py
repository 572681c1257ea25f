"""`python -m sora_tasks.deployments.serve` as a process: no serving without a reachable Prefect API, prompt stop on a signal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sora_tasks.deployments.triggers import BATCH_VIDEO_UPLOADED_NAME

from .prefect_api import prefect_api

PROJECT = Path(__file__).resolve().parent.parent
NO_API = (
    "no reachable Prefect API: start one with `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
)
SERVED = {
    "generate-video/adhoc",
    "remix-video/remix",
    "edit-video/edit",
    "extend-video/extend",
    "storyboard/storyboard",
    "review-video/review",
    "expire-review/review-timeout",
    "submit-video/submit",
    "collect-video/collect",
    "generate-videos/shard",
    "collect-pending/collect-pending",
    "generate-videos/nightly-batch",
    "video-uploaded/after-upload",
}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("api_url", ["closed-port", None])
def test_refuses_to_serve_without_a_reachable_prefect_api(api_url: str | None, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path)}  # an empty home: no profile supplies a URL
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{closed_port()}/api"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sora_tasks.deployments.serve"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    assert took < 20, took  # about 5 s here, most of it imports
    [line] = done.stderr.splitlines()
    assert line.startswith(NO_API), line
    assert ("Connection refused" if api_url else "PREFECT_API_URL is not set") in line
    assert "Traceback" not in done.stdout + done.stderr
    assert "temporary server" not in done.stdout + done.stderr  # what Prefect would start without the check


def deployments(api_url: str) -> dict[str, dict]:  # type: ignore[type-arg]
    found = prefect_api("POST", "/deployments/filter", json={"limit": 50}, api_url=api_url)
    flows = {flow["id"]: flow["name"] for flow in prefect_api("POST", "/flows/filter", json={}, api_url=api_url)}
    return {f"{flows[d['flow_id']]}/{d['name']}": d for d in found}


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_serving_within_seconds(
    stop: signal.Signals, prefect_server_env: dict[str, str], tmp_path: Path
) -> None:
    api_url = prefect_server_env["PREFECT_API_URL"]
    log_path = tmp_path / "serve.log"
    # The child must start with SIGINT handled, as from a terminal, even if pytest runs in the background.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sora_tasks.deployments.serve"],
                cwd=PROJECT,
                env={**os.environ, **prefect_server_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 90
        # Registered in the API, and the runner up (it prints "serving ..." once started).
        while set(deployments(api_url)) != SERVED or "serving " not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        assert not deployments(api_url)["collect-pending/collect-pending"]["paused"]  # its schedule is live
        # after-upload's trigger is an automation that runs that deployment, as `prefect deploy` makes it.
        automations = prefect_api("POST", "/automations/filter", json={}, api_url=api_url)
        target = deployments(api_url)["video-uploaded/after-upload"]["id"]
        [trigger] = [a for a in automations if a["name"] == BATCH_VIDEO_UPLOADED_NAME]
        assert [(action["type"], action["deployment_id"]) for action in trigger["actions"]] == [
            ("run-deployment", target)
        ]
        # Zombie detection: a run whose heartbeats stop is marked Crashed (Prefect's recipe).
        [zombies] = [a for a in automations if a["name"] == "sora-crash-zombie-flow-runs"]
        assert zombies["enabled"] and zombies["trigger"]["posture"] == "Proactive"
        assert [action["type"] for action in zombies["actions"]] == ["change-flow-run-state"]
        sent = time.monotonic()
        process.send_signal(stop)
        returncode = process.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert returncode == 0 and took < 10, (returncode, took, output)
    assert "Traceback" not in output and "was never awaited" not in output, output
    # The shutdown ran in full: every served deployment's schedules are paused.
    assert {name for name, d in deployments(api_url).items() if d["paused"]} == SERVED, output
