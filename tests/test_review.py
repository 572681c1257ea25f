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
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
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
        "POST",
        "/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC"},
        api_url=api_url,
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


def test_a_remix_round_makes_a_fourth_take_and_asks_again(start, emulator, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    api_url = env["PREFECT_API_URL"]
    review = start(max_rounds=1)
    run = review.paused()
    resume(api_url, run["id"], {"remix_of": 2, "note": "The same walk, at golden hour"})
    run = review.paused(round_number=2)
    assert emulator.state.jobs_created == 4 and emulator.state.jobs_created_by("remix") == 1
    schema, description = form(api_url, run)
    # Round 2: four takes, and no remix round left, so the form has no remix fields.
    assert list(schema["properties"]) == ["take", "reject"] and schema["properties"]["take"]["maximum"] == 4
    assert len(re.findall(r"!\[take \d\]\(data:", description)) == 4
    assert "remix of take 2: The same walk, at golden hour" in description
    # An answer the form allows but that says nothing is asked again, not guessed.
    resume(api_url, run["id"], {"take": 0, "reject": False})
    run = review.paused(round_number=3)
    _, description = form(api_url, run)
    assert "The last answer was unclear: nothing was chosen" in description
    resume(api_url, run["id"], {"take": 4})
    outcome = review.outcome()
    assert outcome["state"] == "COMPLETED", outcome
    result = outcome["result"]
    remix = result["takes"][3]
    assert (remix["remix_of"], remix["prompt"], result["take"]) == (2, "The same walk, at golden hour", 4)
    assert result["video"]["video_id"] == remix["video_id"] and result["rounds"] == 3
    assert [job.id for job in emulator.state.listing()] == [remix["video_id"]]  # the three first takes deleted
    assert emulator.state.jobs_created == 4
    decided = review_events(api_url, run["id"], {"sora.review.decided": 3})["sora.review.decided"]
    assert sorted(event["payload"]["decision"] for event in decided) == ["remix", "take", "unclear"]


def test_reject_delivers_nothing_deletes_every_take_and_says_so(  # type: ignore[no-untyped-def]
    start, emulator, env: dict[str, str], tmp_path: Path
) -> None:
    review = start()
    run = review.paused()
    resume(env["PREFECT_API_URL"], run["id"], {"reject": True})
    outcome = review.outcome()
    assert (outcome["state"], outcome["name"]) == ("COMPLETED", "Rejected"), outcome
    assert outcome["message"] == "every take rejected: nothing delivered; 3 takes deleted at the provider"
    assert outcome["result"]["video"] is None and len(outcome["result"]["deleted"]) == 3
    assert emulator.state.listing() == [] and not (tmp_path / "out" / "pick.mp4").exists()
    server = prefect_api("GET", f"/flow_runs/{run['id']}", api_url=env["PREFECT_API_URL"])
    assert (server["state"]["name"], server["state"]["message"]) == ("Rejected", outcome["message"])


@pytest.mark.parametrize("on_timeout", ["reject", "first"])
def test_no_decision_in_time(start, emulator, env: dict[str, str], tmp_path: Path, on_timeout: str) -> None:  # type: ignore[no-untyped-def]
    review = start(timeout=4, on_timeout=on_timeout)
    run = review.paused()
    outcome = review.outcome()  # nobody answers
    server = prefect_api("GET", f"/flow_runs/{run['id']}", api_url=env["PREFECT_API_URL"])
    decided = review_events(env["PREFECT_API_URL"], run["id"], {"sora.review.decided": 1})["sora.review.decided"]
    assert decided[0]["payload"]["by"] == "timeout"
    assert emulator.state.jobs_created == 3
    if on_timeout == "reject":
        assert outcome["state"] == "FAILED", outcome
        message = "no decision within 4 s: nothing delivered; 3 takes deleted at the provider"
        assert outcome["error"] == f"ReviewTimeoutError: {message}"
        assert server["state"]["type"] == "FAILED" and message in server["state"]["message"]
        assert emulator.state.listing() == [] and not (tmp_path / "out" / "pick.mp4").exists()
    else:
        assert outcome["state"] == "COMPLETED", outcome
        result = outcome["result"]
        assert (result["decision"], result["take"], result["by"]) == ("timeout", 1, "timeout")
        assert result["message"].startswith("no decision within 4 s, so take 1")
        assert [job.id for job in emulator.state.listing()] == [result["takes"][0]["video_id"]]
        assert probe_mp4((tmp_path / "out" / "pick.mp4").read_bytes()).frames == 96


def test_a_rerun_after_a_crash_while_waiting_pays_nothing_again(  # type: ignore[no-untyped-def]
    start, emulator, env: dict[str, str], tmp_path: Path
) -> None:
    api_url = env["PREFECT_API_URL"]
    crashed = start()
    first = crashed.paused()
    jobs = sorted(job.id for job in emulator.state.listing())
    crashed.kill()  # the process dies while it waits: Prefect OSS leaves the run Paused
    assert prefect_api("GET", f"/flow_runs/{first['id']}", api_url=api_url)["state"]["type"] == "PAUSED"

    rerun = start()
    run = rerun.paused()
    assert run["id"] != first["id"] and emulator.state.jobs_created == 3  # the same takes, followed
    _, description = form(api_url, run)
    assert all(video_id in description for video_id in jobs) and description.count("(resumed)") == 3
    resume(api_url, run["id"], {"take": 3})
    outcome = rerun.outcome()
    assert outcome["state"] == "COMPLETED", outcome
    result = outcome["result"]
    assert [take["how"] for take in result["takes"]] == ["resumed"] * 3
    assert sorted(take["video_id"] for take in result["takes"]) == jobs
    assert emulator.state.jobs_created == 3 and len(emulator.state.listing()) == 1
    assert probe_mp4((tmp_path / "out" / "pick.mp4").read_bytes()).frames == 96


def flow_run_processes(flow_run_id: str) -> list[int]:
    """Processes on this machine that run this flow run (a worker gives its run's process its id)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ.split(b"\0"):
            found.append(int(proc.name))
    return found


def work_once(env: dict[str, str]) -> str:
    """A process worker that runs what is due now, then exits; returns its log."""
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


def run_deployment(env: dict[str, str], name: str, **parameters: Any) -> str:
    deployment = prefect_api("GET", f"/deployments/name/{name}", api_url=env["PREFECT_API_URL"])
    created = prefect_api(
        "POST",
        f"/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": parameters},
        api_url=env["PREFECT_API_URL"],
    )
    return str(created["id"])


def read_run(env: dict[str, str], flow_run_id: str) -> dict[str, Any]:
    return prefect_api("GET", f"/flow_runs/{flow_run_id}", api_url=env["PREFECT_API_URL"])  # type: ignore[no-any-return]


@pytest.mark.slow  # 60-120 s here: `prefect deploy`, and a process worker started four times
def test_a_deployment_run_is_suspended_while_it_waits_and_resumed(  # type: ignore[no-untyped-def]
    env: dict[str, str], emulator, tmp_path: Path, unique_prompt: str
) -> None:
    env = {**env, "SORA_PROJECT_DIR": str(PROJECT)}
    done = subprocess.run(
        [str(BIN / "prefect"), "work-pool", "create", "sora", "--type", "process"], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    deployed = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env=env, cwd=PROJECT, capture_output=True, text=True
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    api = {"base_url": emulator.base_url, "poll_interval": 0.2}
    output = str(tmp_path / "deployed" / "pick.mp4")
    flow_run_id = run_deployment(env, "review-video/review", video=unique_prompt, api=api, output=output)

    log = work_once(env)
    run = read_run(env, flow_run_id)
    assert (run["state"]["type"], run["state"]["name"]) == ("PAUSED", "Suspended"), log[-3000:]
    assert run["state"]["state_details"]["pause_reschedule"]
    # Nothing holds the run while it waits: the worker is gone and no process runs it.
    assert flow_run_processes(flow_run_id) == []
    assert emulator.state.jobs_created == 3
    schema, description = form(env["PREFECT_API_URL"], run)
    assert list(schema["properties"]) == ["take", "remix_of", "note", "reject"]
    assert len(re.findall(r"!\[take \d\]\(data:image/webp", description)) == 3
    # Its deadline is a scheduled run of review-timeout, a day away (the deployment's timeout).
    [deadline] = prefect_api(
        "POST",
        "/flow_runs/filter",
        json={"flow_runs": {"idempotency_key": {"any_": [f"sora-review-deadline-{flow_run_id}-review-1"]}}},
        api_url=env["PREFECT_API_URL"],
    )
    assert deadline["parameters"] == {"flow_run_id": flow_run_id, "key": "review-1"}

    resume(env["PREFECT_API_URL"], flow_run_id, {"take": 2})
    assert read_run(env, flow_run_id)["state"]["name"] == "Resuming"
    log = work_once(env)  # executed again from the top: the receipts make the takes free
    run = read_run(env, flow_run_id)
    assert run["state"]["type"] == "COMPLETED", log[-4000:]
    assert emulator.state.jobs_created == 3 and len(emulator.state.listing()) == 1
    assert probe_mp4(Path(output).read_bytes()).frames == 96
    events = review_events(env["PREFECT_API_URL"], flow_run_id, {"sora.review.decided": 1})
    assert len(events["sora.review.waiting"]) == 1 and len(events["sora.review.decided"]) == 1  # once each
    assert events["sora.review.waiting"][0]["payload"]["mode"] == "suspended"
    gone = prefect_api(
        "POST",
        "/flow_runs/filter",
        json={"flow_runs": {"id": {"any_": [deadline["id"]]}}},
        api_url=env["PREFECT_API_URL"],
    )
    assert gone == []  # answered: its deadline run was removed

    # A suspended review nobody answers: its deadline run resumes it, and take 1 is delivered.
    emulator.state.reset()
    late = str(tmp_path / "late" / "pick.mp4")
    flow_run_id = run_deployment(
        env, "review-video/review", video=f"{unique_prompt}, late", api=api, output=late, timeout=3, on_timeout="first"
    )
    log = work_once(env)
    assert read_run(env, flow_run_id)["state"]["name"] == "Suspended", log[-3000:]
    time.sleep(4)
    log = work_once(env)  # the deadline run: the review is resumed with timed_out
    assert read_run(env, flow_run_id)["state"]["name"] == "Resuming", log[-3000:]
    log = work_once(env)
    run = read_run(env, flow_run_id)
    assert run["state"]["type"] == "COMPLETED", log[-4000:]
    assert emulator.state.jobs_created == 3 and len(emulator.state.listing()) == 1
    assert probe_mp4(Path(late).read_bytes()).frames == 96
    decided = review_events(env["PREFECT_API_URL"], flow_run_id, {"sora.review.decided": 1})["sora.review.decided"]
    assert (decided[0]["payload"]["decision"], decided[0]["payload"]["by"]) == ("timeout", "timeout")


@pytest.mark.slow  # 60-90 s here: a review, a notification, Chromium on the Prefect UI
@pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
def test_a_person_is_notified_opens_the_paused_run_in_the_prefect_ui_and_picks_take_2(  # type: ignore[no-untyped-def]
    start, emulator, env: dict[str, str], tmp_path: Path
) -> None:
    from .test_what_a_person_sees import Webhook

    api_url = env["PREFECT_API_URL"]
    shots = SCREENSHOTS or tmp_path / "ui"
    hook = Webhook()
    try:
        # The shipped notification, pointed at a webhook block with the project's helper.
        save_block = (
            "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B; "
            f"B(name='sora-review', url='{hook.url}', json_data={{'subject': '{{{{subject}}}}', 'body': '{{{{body}}}}'}})"
            ".save('sora-review', overwrite=True)"
        )
        for command in (
            [sys.executable, "-c", save_block],
            [
                sys.executable,
                "-m",
                "sora_tasks.deployments.automations",
                "--notify",
                "custom-webhook/sora-review",
                "sora_tasks/automations/waiting-for-review.yaml",
            ],
        ):
            done = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr

        review = start()
        run = review.paused()
        [note] = hook.wait_for(1)
        assert note["subject"] == f"Takes to review: {review.name}", note
        [url] = re.findall(r"http://\S+", note["body"])
        assert note["body"].startswith("3 takes wait for a decision (round 1)") and url.endswith(run["id"])
        jobs = sorted(job.id for job in emulator.state.listing())
    finally:
        hook.server.shutdown()

    with chromium(viewport=(1400, 900)) as browser:
        # The notification's link opens the run in the UI it names (Prefect's V1 pages): the form
        # shows the three takes there too.
        page = browser._context.new_page()  # one page a visit: open, look, fill, submit
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("button", name="Resume").first.click(timeout=60_000)
        page.get_by_text("Pick a take").first.wait_for(timeout=30_000)
        assert_takes_shown(page, "[role=dialog]", jobs)
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "review-form-v1.png"))
        page.close()

        # The default UI (V2): the run's menu, Resume, the form; take 2 is typed and submitted.
        page = browser._context.new_page()
        page.goto(url.replace("/runs/", "/v2/runs/"), wait_until="domcontentloaded")
        page.get_by_text("Paused").first.wait_for(timeout=60_000)
        page.locator("role=button[name='Open menu']").first.click(timeout=30_000)
        page.locator("role=menuitem[name='Resume']").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Pick a take").wait_for(timeout=30_000)
        assert_takes_shown(page, "[role=dialog]", jobs)
        page.screenshot(path=str(shots / "review-form.png"))
        dialog.get_by_label("Take (Optional)").fill("2")
        dialog.get_by_label("Take (Optional)").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "review-form-filled.png"))
        dialog.get_by_role("button", name="Resume").click()

        outcome = review.outcome()
        assert outcome["state"] == "COMPLETED", outcome
        result = outcome["result"]
        assert (result["take"], result["video"]["video_id"]) == (2, result["takes"][1]["video_id"])
        assert emulator.state.jobs_created == 3 and len(emulator.state.listing()) == 1
        assert probe_mp4((tmp_path / "out" / "pick.mp4").read_bytes()).frames == 96

        # The run ends Completed; the takes' history keeps the decision with the three thumbnails.
        page.goto(f"{url.replace('/runs/', '/v2/runs/')}?tab=Artifacts", wait_until="domcontentloaded")
        page.get_by_text("Completed").first.wait_for(timeout=60_000)
        page.get_by_text("review-video-takes").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "review-run.png"))
        [history] = keyed(api_url, "review-video-takes")[:1]
        page.close()
        rendered = browser.open(
            f"{url.split('/runs/')[0]}/v2/artifacts/artifact/{history['id']}",
            wait_for_text=["Review: take 2", *jobs],
            wait_for_selector="img[alt='take 3']",
            screenshot=shots / "review-takes.png",
        )
        assert len([image for image in rendered.loaded_images if image.src.startswith("data:image/webp")]) == 3
        assert not rendered.broken_images, rendered.describe()
    for name in ("review-form-v1", "review-form", "review-form-filled", "review-run", "review-takes"):
        with Image.open(shots / f"{name}.png") as image:
            assert image.width == 1400 and image.height >= 900, (name, image.size)


def assert_takes_shown(page: Any, within: str, jobs: list[str]) -> None:
    """The form's description shows every take: its thumbnail loaded (a data: URL of the 1280x720
    WebP), its length and its video id."""
    page.wait_for_function("() => Array.from(document.images).every((img) => img.complete)", timeout=30_000)
    images = page.locator(within).first.evaluate(
        "(d) => Array.from(d.querySelectorAll('img[alt^=\"take \"]'))"
        ".map((i) => [i.alt, i.src.slice(0, 23), i.naturalWidth, i.naturalHeight])"
    )
    assert images == [[f"take {n}", "data:image/webp;base64,", 1280, 720] for n in (1, 2, 3)], images
    text = page.locator(within).first.inner_text()
    assert all(video_id in text for video_id in jobs) and text.count("4 s, 1280x720") == 3, text


# `sora-video takes`, as a person runs it: a process of its own, on a terminal (a pty) or not.


def cli_env(tmp_path: Path, emulator, api_url: str | None = None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env.update(OPENAI_BASE_URL=emulator.base_url, PREFECT_HOME=str(tmp_path / "prefect-home"))  # no profile's API
    if api_url:
        env.update(PREFECT_API_URL=api_url, PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results"))
    return env


class Terminal:
    """``sora-video`` on a pseudo-terminal: what it printed so far, and lines typed into it."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sora_tasks.cli", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=PROJECT,
        )
        os.close(slave)
        self.text = ""

    def expect(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text)
            if found:
                return found
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.text[-3000:]}"
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.text += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the process ended and closed its side
                    assert self.process.poll() is not None
                    assert re.search(pattern, self.text), f"no {pattern!r} in:\n{self.text[-3000:]}"

    def type(self, line: str) -> None:
        self.text = ""  # what comes next is the answer's
        os.write(self.master, (line + "\n").encode())

    def close(self, timeout: float = 120) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"still running after {timeout} s:\n{self.text[-3000:]}") from None
        with suppress(OSError):
            self.text += os.read(self.master, 65536).decode(errors="replace")
        os.close(self.master)
        return code


def test_takes_without_a_terminal_or_a_prefect_api_is_refused_before_anything_is_paid(  # type: ignore[no-untyped-def]
    emulator, tmp_path: Path, unique_prompt: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sora_tasks.cli",
            "takes",
            "--prompt",
            unique_prompt,
            "--output",
            str(tmp_path / "x.mp4"),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(tmp_path, emulator),
        cwd=PROJECT,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "sora-video: invalid input (nothing was sent): nobody can pick a take: stdin is not a terminal"
    ), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert emulator.state.jobs_created == 0 and emulator.state.count("create") == 0


def test_takes_on_a_terminal_remix_then_keep(emulator, tmp_path: Path, unique_prompt: str) -> None:  # type: ignore[no-untyped-def]
    output = tmp_path / "pick.mp4"
    args = ["takes", "--takes", "2", "--prompt", unique_prompt, "--output", str(output), "--max-rounds", "1"]
    terminal = Terminal(args, cli_env(tmp_path, emulator))
    terminal.expect(r"round 1: 2 takes")
    terminal.expect(r"keep which take\?")
    assert emulator.state.jobs_created == 2 and terminal.text.count("takes/video_") == 4  # each take's previews
    terminal.type("3")
    terminal.expect(r"unclear: there is no take 3 \(1 to 2\)")
    terminal.expect(r"keep which take\?")
    terminal.type("r 1 The same boat, at night")
    terminal.expect(r"round \d+: 3 takes")
    terminal.expect(r"remix of 1: The same boat, at night")
    terminal.expect(r"no remix round left")
    terminal.expect(r"keep which take\?")
    terminal.type("3")
    assert terminal.close() == 0, terminal.text
    assert f"take 3 delivered to {output}; 2 other takes deleted at the provider" in terminal.text
    assert terminal.text.strip().splitlines()[-1].strip() == str(output)
    assert probe_mp4(output.read_bytes()).frames == 96
    assert emulator.state.jobs_created == 3 and emulator.state.jobs_created_by("remix") == 1
    assert len(emulator.state.listing()) == 1


def test_takes_with_a_prefect_api_is_decided_in_the_ui_or_on_the_terminal(  # type: ignore[no-untyped-def]
    emulator, tmp_path: Path, unique_prompt: str, env: dict[str, str]
) -> None:
    api_url = env["PREFECT_API_URL"]
    # No terminal: the run's URL is printed and the decision comes from the UI's side (the API here).
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sora_tasks.cli",
            "takes",
            "--prompt",
            unique_prompt,
            "--output",
            str(tmp_path / "a.mp4"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "cli.log").open("w"),
        text=True,
        env=cli_env(tmp_path, emulator, api_url),
        cwd=PROJECT,
    )
    try:
        deadline = time.monotonic() + 150
        while not re.search(r"waiting for a decision at (\S+)", (tmp_path / "cli.log").read_text()):
            assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]
            time.sleep(0.5)
        url = re.findall(r"waiting for a decision at (\S+)", (tmp_path / "cli.log").read_text())[0]
        run_id = url.rsplit("/", 1)[1]
        wait_paused(api_url, lambda: read_run(env, run_id), 1)
        resume(api_url, run_id, {"take": 1})
        stdout, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, (tmp_path / "cli.log").read_text()[-3000:]
    assert stdout.strip() == str(tmp_path / "a.mp4") and "decided: take 1" in (tmp_path / "cli.log").read_text()

    # On a terminal: the same prompt as without Prefect, and the answer typed there resumes the run.
    emulator.state.reset()
    args = ["takes", "--prompt", f"{unique_prompt}, typed", "--output", str(tmp_path / "b.mp4")]
    terminal = Terminal(args, cli_env(tmp_path, emulator, api_url))
    found = terminal.expect(r"or decide at (\S+/runs/flow-run/[0-9a-f-]+)")
    terminal.expect(r"keep which take\?")
    terminal.type("2")
    assert terminal.close() == 0, terminal.text
    assert "take 2 (" in terminal.text and terminal.text.strip().splitlines()[-1].strip() == str(tmp_path / "b.mp4")
    run = read_run(env, found.group(1).rsplit("/", 1)[1])
    assert run["state"]["type"] == "COMPLETED" and emulator.state.jobs_created == 3


def test_an_s3_review_shows_its_takes_by_presigned_urls(start, emulator, env: dict[str, str], s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    import httpx

    review = start(output=f"s3://{bucket}/looks/{{video_id}}.mp4")
    run = review.paused()
    _, description = form(env["PREFECT_API_URL"], run)
    thumbnails = re.findall(r"!\[take \d\]\((http[^)]+)\)", description)
    frames = re.findall(r"\[frames\]\((http[^)]+)\)", description)
    assert len(thumbnails) == 3 and len(frames) == 3, description[:1000]
    for url, kind in [*((url, "image/webp") for url in thumbnails), *((url, "image/jpeg") for url in frames)]:
        answer = httpx.get(url)  # what a browser loads: a presigned GET of the take's preview in S3
        assert answer.status_code == 200 and answer.headers["content-type"] == kind, url
        assert f"/{bucket}/looks/takes/video_" in url and "X-Amz-Signature=" in url
    resume(env["PREFECT_API_URL"], run["id"], {"take": 1})
    outcome = review.outcome()
    assert outcome["state"] == "COMPLETED", outcome
    video_id = outcome["result"]["takes"][0]["video_id"]
    assert outcome["result"]["video"]["uri"] == f"s3://{bucket}/looks/{video_id}.mp4"
    assert s3.head_object(Bucket=bucket, Key=f"looks/{video_id}.mp4")["ContentType"] == "video/mp4"
    assert s3.head_object(Bucket=bucket, Key=f"looks/{video_id}.thumbnail.webp")["ContentType"] == "image/webp"
    assert [job.id for job in emulator.state.listing()] == [video_id]


def test_answers_are_read_as_one_decision_and_previews_inline_only_as_images() -> None:
    from sora_tasks.core.jobs.review import interpret, parse_answer
    from sora_tasks.core.text import markdown_inline_image

    assert interpret({"take": 2, "remix_of": 0, "note": "", "reject": False}, 3, 1).kind == "take"  # V1's form
    assert interpret({"take": 2}, 3, 1).take == 2  # V2's form, and resume_flow_run from code
    assert interpret({"take": 2, "reject": True}, 3, 1).problem == "choose one of take, reject"
    assert interpret({"remix_of": 1}, 3, 1).problem == "a remix of take 1 needs a note (the remix prompt)"
    assert interpret({"remix_of": 1, "note": "x"}, 3, 0).problem == "no remix round is left: keep a take or reject"
    assert interpret({"timed_out": True, "take": 2}, 3, 1).kind == "timeout"
    assert parse_answer("r 2 warmer, slower", 3, 1).note == "warmer, slower"
    assert (parse_answer("x", 3, 1).kind, parse_answer("9", 3, 1).problem) == ("reject", "there is no take 9 (1 to 3)")
    assert (
        markdown_inline_image("take 1", "data:image/webp;base64,UklGRg==")
        == "![take 1](data:image/webp;base64,UklGRg==)"
    )
    for hostile in (
        "data:text/html;base64,PHNjcmlwdD4=",
        "data:image/webp;base64,AA==) ![x](http://evil",
        "javascript:x",
    ):
        assert markdown_inline_image("take 1", hostile) == "", hostile
