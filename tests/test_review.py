"""Takes and review on a real `prefect server start`: several takes, a person's decision, only the pick delivered.

Every review runs in a process of its own against the module's server (as a user's script
or a worker would), on the emulator through the real openai SDK. The person is played by
Prefect's own ``resume_flow_run``, by the Prefect UI in Chromium, or by a terminal (a pty);
the test then reads what the server, the emulator and the disk hold.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from .browser import chromium, missing_reason
from .media import probe_mp4
from .prefect_api import prefect_api

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SCREENSHOTS = Path(os.environ["SORA_SCREENSHOTS"]) if os.environ.get("SORA_SCREENSHOTS") else None

# One review as a user's script runs it; prints its final state and result on the last line.
RUN_REVIEW = """
import json, sys
from sora_tasks.blocks import VideosApi
from sora_tasks.flows.review import review_video

params = json.loads(sys.argv[1])
api = VideosApi(base_url=params.pop("base_url"), poll_interval=0.1)
name = params.pop("name")
state = review_video.with_options(flow_run_name=name)(api=api, return_state=True, **params)
out = {"state": state.type.value, "name": state.name, "message": state.message, "run": str(state.state_details.flow_run_id)}
try:
    out["result"] = state.result().model_dump(mode="json")
except Exception as error:
    out["error"] = f"{type(error).__name__}: {error}"
print("RESULT " + json.dumps(out), flush=True)
"""


class Review:
    """A review running in its own process: its flow run (once it exists), its outcome (once it ends)."""

    def __init__(self, env: dict[str, str], log: Path, **params: Any) -> None:
        self.env, self.api_url, self.name = env, env["PREFECT_API_URL"], f"review-{uuid.uuid4().hex[:10]}"
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-c", RUN_REVIEW, json.dumps({**params, "name": self.name})],
            env=env,
            cwd=PROJECT,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def run(self) -> dict[str, Any]:
        """The flow run as the server has it (waits until it exists)."""
        deadline = time.monotonic() + 120
        while True:
            found = prefect_api(
                "POST", "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [self.name]}}}, api_url=self.api_url
            )
            if found or time.monotonic() > deadline:
                assert found, self.log.read_text()[-3000:]
                return found[0]  # type: ignore[no-any-return]
            time.sleep(0.5)

    def paused(self, round_number: int = 1) -> dict[str, Any]:
        """The run once it waits at round ``round_number`` (its state Paused, its pause key that round's)."""
        return wait_paused(self.api_url, lambda: self.run(), round_number, self.log)

    def outcome(self, timeout: float = 150) -> dict[str, Any]:
        self.process.wait(timeout=timeout)
        text = self.log.read_text()
        lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
        assert lines, text[-4000:]
        return json.loads(lines[-1].removeprefix("RESULT "))  # type: ignore[no-any-return]

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def wait_paused(api_url: str, read: Any, round_number: int, log: Path | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 150
    while True:
        run = read()
        state = run["state"] or {}
        if state.get("type") == "PAUSED" and state["state_details"].get("pause_key") == f"review-{round_number}":
            return run  # type: ignore[no-any-return]
        assert state.get("type") not in ("COMPLETED", "FAILED", "CRASHED"), (state, log and log.read_text()[-3000:])
        assert time.monotonic() < deadline, (state, log and log.read_text()[-3000:])
        time.sleep(0.5)


def resume(api_url: str, flow_run_id: str, run_input: dict[str, Any]) -> None:
    """Prefect's own ``resume_flow_run``, pointed at the module's server."""
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        resume_flow_run(uuid.UUID(flow_run_id), run_input=run_input)


def form(api_url: str, run: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The paused run's form (its JSON schema) and description, as the UI reads them."""
    keyset = run["state"]["state_details"]["run_input_keyset"]
    schema = prefect_api("GET", f"/flow_runs/{run['id']}/input/{keyset['schema']}", api_url=api_url)
    description = prefect_api("GET", f"/flow_runs/{run['id']}/input/{keyset['description']}", api_url=api_url)
    return schema, description


def review_events(api_url: str, run_id: str, wanted: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """The sora.review.* events of one run, once there are as many of each as wanted."""
    deadline = time.monotonic() + 30
    while True:
        found = prefect_api(
            "POST",
            "/events/filter",
            json={"filter": {"resource": {"id": [f"sora.review.{run_id}"]}}, "limit": 50},
            api_url=api_url,
        )
        by_name: dict[str, list[dict[str, Any]]] = {}
        for event in found["events"]:
            by_name.setdefault(event["event"], []).append(event)
        if all(len(by_name.get(name, [])) >= count for name, count in wanted.items()) or time.monotonic() > deadline:
            return by_name
        time.sleep(0.5)


def keyed(api_url: str, key: str) -> list[dict[str, Any]]:
    return prefect_api(  # type: ignore[no-any-return]
        "POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC"}, api_url=api_url
    )


@pytest.fixture
def env(prefect_server_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**os.environ, **prefect_server_env, "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results")}


@pytest.fixture
def start(env: dict[str, str], emulator, tmp_path: Path, unique_prompt: str) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """``start(**params)``: a review of this test's prompt, 3 takes to ``tmp_path/out/pick.mp4`` unless told."""
    started: list[Review] = []

    def begin(**params: Any) -> Review:
        params = {
            "video": unique_prompt,
            "takes": 3,
            "output": str(tmp_path / "out" / "pick.mp4"),
            "base_url": emulator.base_url,
            "timeout": 300,
            **params,
        }
        review = Review(env, tmp_path / f"review-{len(started)}.log", **params)
        started.append(review)
        return review

    yield begin
    for review in started:
        if review.process.poll() is None:
            review.kill()


def test_an_adhoc_review_pauses_with_a_form_and_resuming_with_take_2_delivers_it(  # type: ignore[no-untyped-def]
    start, emulator, env: dict[str, str], tmp_path: Path
) -> None:
    api_url = env["PREFECT_API_URL"]
    review = start()
    run = review.paused()
    assert run["state"]["name"] == "Paused" and run["deployment_id"] is None
    assert review.process.poll() is None  # paused: the process waits
    assert emulator.state.jobs_created == 3  # three paid jobs, one a take
    jobs = {job.id for job in emulator.state.listing()}

    # The form: take 1-3, a remix of one with a note, reject; the description shows every take.
    schema, description = form(api_url, run)
    assert list(schema["properties"]) == ["take", "remix_of", "note", "reject"], schema
    assert (schema["properties"]["take"]["minimum"], schema["properties"]["take"]["maximum"]) == (0, 3)
    assert "timed_out" not in schema["properties"]  # the deadline's field is not the person's
    assert len(re.findall(r"!\[take \d\]\(data:image/webp;base64,", description)) == 3, description[:500]
    assert all(video_id in description for video_id in jobs) and description.count("4 s, 1280x720") == 3
    takes = {path.name for path in (tmp_path / "out" / "takes").iterdir()}
    assert takes == {f"{job}.{kind}" for job in jobs for kind in ("thumbnail.webp", "spritesheet.jpg")}

    waiting = review_events(api_url, run["id"], {"sora.review.waiting": 1})["sora.review.waiting"]
    assert waiting[0]["payload"]["url"].endswith(f"/runs/flow-run/{run['id']}")
    assert sorted(take["video_id"] for take in waiting[0]["payload"]["takes"]) == sorted(jobs)

    resume(api_url, run["id"], {"take": 2})
    outcome = review.outcome()
    assert outcome["state"] == "COMPLETED", outcome
    result = outcome["result"]
    take_2 = result["takes"][1]["video_id"]
    assert (result["decision"], result["take"], result["video"]["video_id"]) == ("take", 2, take_2)
    # Delivered as generate_video delivers: the checked MP4 and its previews beside it.
    delivered = tmp_path / "out" / "pick.mp4"
    assert result["video"]["uri"] == str(delivered) and probe_mp4(delivered.read_bytes()).frames == 96
    assert (tmp_path / "out" / "pick.thumbnail.webp").exists() and (tmp_path / "out" / "pick.spritesheet.jpg").exists()
    # The other two deleted at the provider; nothing more paid.
    assert sorted(result["deleted"]) == sorted(jobs - {take_2})
    assert [job.id for job in emulator.state.listing()] == [take_2]
    assert emulator.state.jobs_created == 3 and emulator.state.count("delete") == 2

    decided = review_events(api_url, run["id"], {"sora.review.decided": 1})["sora.review.decided"]
    assert (decided[0]["payload"]["decision"], decided[0]["payload"]["take"]) == ("take", 2)
    assert decided[0]["payload"]["video_id"] == take_2
    history = keyed(api_url, "review-video-takes")
    assert history[0]["flow_run_id"] == run["id"] and "take 2" in history[0]["description"]
    assert [a["flow_run_id"] for a in keyed(api_url, "review-video")][:1] == [run["id"]]  # the pick's summary

    # The same review again: decided before, so nothing is asked, made, followed or paid.
    again = start().outcome()
    assert again["state"] == "COMPLETED" and again["result"]["how"] == "already decided", again
    assert again["result"]["video"]["video_id"] == take_2 and again["result"]["video"]["how"] == "already delivered"
    assert emulator.state.jobs_created == 3 and emulator.state.count("delete") == 2
