"""The first five minutes: keyless modes that span commands, fail-fast input, progress, load, services."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .media import api_requests, probe_mp4
from .prefect_api import prefect_api
from .test_cli import sora_video

KEYLESS = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PREFECT_API_URL")}


def process_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit may wait for a reaper that a container lacks)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def keyless(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sora_tasks.cli", *args],
        capture_output=True,
        text=True,
        env={**KEYLESS, **(env or {})},
        cwd=cwd,
        timeout=300,
    )


def test_keyless_async_then_status_then_collect_deliver_and_pending_then_has_nothing(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    submitted = keyless(
        "--prompt", "Fabric in slow motion", "--async", "--output", "fabric.mp4", "--ledger", ledger, cwd=tmp_path
    )
    assert submitted.returncode == 0, submitted.stderr
    video_id = submitted.stdout.strip()
    assert re.fullmatch(r"video_[0-9a-f]+", video_id), submitted.stdout
    assert "sora-video pending" in submitted.stderr

    status = keyless("status", video_id)
    assert status.returncode == 0, status.stderr
    assert '"id": "' + video_id in status.stdout

    collected: subprocess.CompletedProcess[str] | None = None
    for _ in range(60):  # the emulator renders in 3 s; collect refuses clearly until then
        collected = keyless("collect", video_id, "--output", str(tmp_path / "collected.mp4"), "--ledger", ledger)
        if collected.returncode == 0:
            break
        assert "collect it later" in collected.stderr, collected.stderr
        time.sleep(0.5)
    assert collected is not None and collected.returncode == 0, collected.stderr
    assert collected.stdout.strip() == str(tmp_path / "collected.mp4")
    assert probe_mp4(tmp_path / "collected.mp4").frames == 4 * 24
    assert f"video {video_id}" in collected.stderr  # the summary line

    # collect cleared the --async record: pending must not deliver the same video again.
    swept = keyless("pending", "--ledger", ledger, cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    assert swept.stdout == "" and "nothing pending" in swept.stderr
    assert not (tmp_path / "fabric.mp4").exists()


def test_pending_reports_what_it_delivered_and_what_still_renders(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    first = keyless(
        "--prompt", "A lighthouse at night", "--async", "--output", "a.mp4", "--ledger", ledger, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    early = keyless("pending", "--ledger", ledger, cwd=tmp_path)
    assert early.returncode == 0, early.stderr
    assert f"{first.stdout.strip()}\trendering" in early.stdout and "still rendering" in early.stderr
    deadline = time.monotonic() + 60  # the render takes seconds; a busy machine stretches them
    while True:
        time.sleep(1.0)
        done = keyless("pending", "--ledger", ledger, cwd=tmp_path)
        if f"{first.stdout.strip()}\tdelivered" in done.stdout or time.monotonic() > deadline:
            break
        assert "still rendering" in done.stderr, done.stderr
    assert done.returncode == 0 and f"{first.stdout.strip()}\tdelivered" in done.stdout, done.stderr
    assert "1 delivered" in done.stderr and probe_mp4(tmp_path / "a.mp4").seconds == 4.0
    assert "nothing pending" in keyless("pending", "--ledger", ledger).stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--resolution", "1920x1080"), "720x1280, 1280x720"),
        (("--duration", "6"), "4, 8, 12"),
        (("--image", "no-such-photo.jpg"), "no such file"),
        (("--output", "s3://"), "names no bucket"),
        (("--output", "out/{nope}.mp4"), "allowed: video_id, date, model"),
        (("--extra", "seed=7"), "extra field(s) seed not accepted"),
    ],
)
def test_invalid_input_exits_2_in_one_line_with_nothing_sent(emulator, args: tuple[str, ...], says: str) -> None:  # type: ignore[no-untyped-def]
    result = sora_video(
        "--prompt", "A fox", *args, env={"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-x"}
    )
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert api_requests(emulator) == []  # nothing reached the server


def test_a_missing_bucket_and_a_malformed_id_are_refused_before_any_request(emulator, s3_endpoint: str) -> None:  # type: ignore[no-untyped-def]
    env = {"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-x"}
    missing = sora_video("--prompt", "A fox", "--output", "s3://no-such-bucket-here/x.mp4", env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    for command in (("status", "not an id"), ("collect", "../../etc", "--output", "x.mp4")):
        result = sora_video(*command, env=env)
        assert result.returncode == 2 and "is not valid" in result.stderr, result.stderr
    assert api_requests(emulator) == []


def test_a_failure_is_one_line_naming_the_video_and_verbose_adds_the_traceback(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-x", "SORA_LEDGER": str(tmp_path / "ledger")}
    emulator.faults.moderation_words = ("forbidden",)
    quiet = sora_video("--prompt", "a forbidden scene", "--output", str(tmp_path / "x.mp4"), env=env)
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert re.search(r"failed \(video video_\w+, code moderation_blocked\)", quiet.stderr), quiet.stderr
    loud = sora_video(
        "-v", "--prompt", "a forbidden scene", "--request-id", "2", "--output", str(tmp_path / "x.mp4"), env=env
    )
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def run_in_pty(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run with stdin, stdout and stderr on a pseudo-terminal, as in a person's shell."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sora_tasks.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**env, "TERM": "xterm-256color", "COLUMNS": "120"},
        cwd=cwd,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    return process.wait(timeout=30), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)  # colours and cursor moves


def test_the_cli_shows_a_progress_bar_on_a_terminal_and_lines_elsewhere(tmp_path: Path) -> None:
    code, screen = run_in_pty(["--prompt", "A windmill turning", "--output", "mill.mp4"], KEYLESS, tmp_path)
    assert code == 0, screen
    assert "━" in screen  # rich's bar
    assert re.search(r"in_progress\s+[━╸╺]+\s+\d+%\s+0:00:0\d\s+video_[0-9a-f]+", screen), screen
    assert re.search(r"video_[0-9a-f]+", screen)
    assert "delivered " in screen and "mill.mp4" in screen
    assert probe_mp4(tmp_path / "mill.mp4").frames == 96

    plain = keyless("--prompt", "A windmill turning slowly", "--output", "mill2.mp4", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "━" not in plain.stderr and re.search(r"video_\w+: in_progress \d+%", plain.stderr)
    quiet = keyless("--quiet", "--prompt", "A windmill, quietly", "--output", "mill3.mp4", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout.strip().endswith("mill3.mp4")


def test_the_cli_succeeds_beside_two_cpu_bound_processes(tmp_path: Path) -> None:
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        result = keyless("--prompt", "A busy harbour", "--output", "harbour.mp4", cwd=tmp_path)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert result.returncode == 0, result.stderr
    assert probe_mp4(tmp_path / "harbour.mp4").frames == 96


def test_a_rerun_of_the_same_request_follows_the_paid_job(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {"OPENAI_BASE_URL": emulator.base_url, "OPENAI_API_KEY": "sk-x"}
    first = sora_video("--prompt", "A red kite", "--output", str(tmp_path / "a.mp4"), env=env)
    second = sora_video("--prompt", "A red kite", "--output", str(tmp_path / "b.mp4"), env=env)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert emulator.state.jobs_created == 1 and "paid for earlier" in second.stderr
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    third = sora_video("--prompt", "A red kite", "--request-id", "again", "--output", str(tmp_path / "c.mp4"), env=env)
    assert third.returncode == 0 and emulator.state.jobs_created == 2


def test_with_a_prefect_api_configured_a_call_is_a_flow_run(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prefect.settings import PREFECT_API_URL

    env = {
        "OPENAI_BASE_URL": emulator.base_url,
        "OPENAI_API_KEY": "sk-x",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    result = sora_video("--prompt", "A tracked run", "--output", str(tmp_path / "{video_id}.mp4"), env=env)
    assert result.returncode == 0, result.stderr
    video_id = Path(result.stdout.strip()).stem
    assert f"video {video_id}" in result.stderr and "Traceback" not in result.stderr
    runs: list[dict[str, Any]] = prefect_api(
        "POST",
        "/flow_runs/filter",
        json={"flows": {"name": {"any_": ["generate-video"]}}, "sort": "START_TIME_DESC", "limit": 50},
    )
    video = lambda run: run["parameters"].get("video")  # noqa: E731 - a string where a run took just a prompt
    matching = [run for run in runs if isinstance(video(run), dict) and video(run)["prompt"] == "A tracked run"]
    assert matching and matching[0]["state_type"] == "COMPLETED"


def test_up_ps_down_manage_the_background_emulator(tmp_path: Path) -> None:
    home = {"SORA_HOME": str(tmp_path / "home")}
    up = keyless("up", "--render-seconds", "1", env=home)
    assert up.returncode == 0, up.stderr
    url = re.search(r"http://127\.0\.0\.1:\d+/v1", up.stdout)
    pid = int(re.search(r"pid (\d+)", up.stdout).group(1))  # type: ignore[union-attr]
    assert url and "emulator" in keyless("ps", env=home).stdout
    made = keyless("--prompt", "A quick one", "--output", "q.mp4", cwd=tmp_path, env=home)
    assert made.returncode == 0 and "using the local Sora emulator" not in made.stderr  # reused, not started
    down = keyless("down", env=home)
    assert down.returncode == 0 and f"stopped emulator (pid {pid})" in down.stdout
    assert not process_running(pid)  # `down` waits for the process to end
    assert "no background services" in keyless("ps", env=home).stdout
