"""The emulator's render workers never outlive it: SIGTERM, SIGKILL, --idle-exit, embedded.

Real processes throughout; the process tree is read from /proc, so Linux only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai import OpenAI

from sora_tasks.emulator import EmulatorConfig, EmulatorState
from sora_tasks.emulator.state import Job

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses import this checkout, not whatever copy the environment has installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
GONE_WITHIN = 5.0


@dataclass(frozen=True)
class Proc:
    pid: int
    started: int  # start time in clock ticks: a pid reused meanwhile is not mistaken for this one
    cmdline: str

    @property
    def is_render_worker(self) -> bool:
        return "multiprocessing.spawn" in self.cmdline

    def alive(self) -> bool:
        fields = _stat(self.pid)
        # A zombie has exited; whether anyone reaps it is up to init, not the emulator.
        return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == self.started


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, ..., starttime at index 19), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def children(pid: int) -> list[Proc]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(Proc(int(entry.name), int(fields[19]), _cmdline(int(entry.name))))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def render_workers(pid: int) -> list[Proc]:
    return [child for child in children(pid) if child.is_render_worker]


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Processes:
    """What a test started or found; whatever is still alive at teardown gets SIGKILL."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []
        self.found: list[Proc] = []

    def start(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with (self.tmp_path / log_name).open("wb") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=self.tmp_path)
        self.started.append(process)
        return process

    def children_once_rendering(self, pid: int, workers: int) -> list[Proc]:
        """The children of `pid` (render workers, resource tracker) once `workers` render workers run."""
        assert wait_until(lambda: len(render_workers(pid)) >= workers, 30), f"no render workers under {pid}"
        found = children(pid)
        self.found.extend(found)
        return found

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                self.found.extend(children(process.pid))
                process.kill()
                process.wait(10)
        for proc in self.found:
            if proc.alive():
                os.kill(proc.pid, signal.SIGKILL)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    tracked = Processes(tmp_path)
    try:
        yield tracked
    finally:
        tracked.cleanup()


def start_emulator_process(processes: Processes, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    url_file = processes.tmp_path / "emulator.url"
    command = [sys.executable, "-m", "sora_tasks.emulator", "--port", "0", "--url-file", str(url_file)]
    process = processes.start([*command, "--render-seconds", "0.5", *extra], "emulator.log")
    deadline = time.monotonic() + 60
    while not url_file.exists():
        assert process.poll() is None, f"the emulator exited with {process.returncode}: {log_of(processes)}"
        assert time.monotonic() < deadline, f"no {url_file} within 60 s: {log_of(processes)}"
        time.sleep(0.05)
    return process, url_file.read_text()


def log_of(processes: Processes, name: str = "emulator.log") -> str:
    return (processes.tmp_path / name).read_text(errors="replace")[-3000:]


def create_videos(base_url: str, count: int = 2) -> OpenAI:
    """Start `count` renders (so as many workers, up to the CPUs), and leave them encoding."""
    client = OpenAI(base_url=base_url, api_key="sk-any", max_retries=0)
    for n in range(count):
        client.videos.create(prompt=f"lifecycle {n}", size="1280x720", seconds="4")
    return client


def expected_workers() -> int:
    return min(2, os.cpu_count() or 1)


def assert_all_gone(procs: list[Proc], within: float = GONE_WITHIN) -> None:
    if not wait_until(lambda: not any(proc.alive() for proc in procs), within):
        survivors = [f"{proc.pid}: {proc.cmdline[:120]}" for proc in procs if proc.alive()]
        pytest.fail(f"still running {within:g} s after the emulator stopped: {survivors}")


def test_url_file_has_the_real_port_and_sigkill_takes_the_workers_along(processes: Processes) -> None:
    process, base_url = start_emulator_process(processes)
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
    assert not base_url.startswith("http://127.0.0.1:0/")
    assert f"Sora emulator on {base_url} " in log_of(processes)
    create_videos(base_url)
    found = processes.children_once_rendering(process.pid, expected_workers())
    process.kill()
    process.wait(10)
    assert_all_gone(found)


def test_sigterm_exits_0_promptly_and_stops_busy_workers(processes: Processes) -> None:
    process, base_url = start_emulator_process(processes)
    create_videos(base_url)
    found = processes.children_once_rendering(process.pid, expected_workers())
    assert any(proc.alive() for proc in found)
    started = time.monotonic()
    process.terminate()
    assert process.wait(10) == 0, log_of(processes)
    assert time.monotonic() - started < 8
    assert not [proc for proc in found if proc.is_render_worker and proc.alive()]  # close() joined them
    assert_all_gone(found)  # and the resource tracker follows


def test_idle_exit_counts_from_the_last_request(processes: Processes) -> None:
    process, base_url = start_emulator_process(processes, "--idle-exit", "2")
    client = create_videos(base_url, count=1)
    found = processes.children_once_rendering(process.pid, 1)
    video_id = client.videos.list().data[0].id
    # Busy for longer than the idle limit: requests keep it up.
    busy_until = time.monotonic() + 2.6
    while True:
        assert client.videos.retrieve(video_id).id == video_id
        last_request = time.monotonic()
        if last_request > busy_until:
            break
        time.sleep(0.3)
    assert process.wait(10) == 0, log_of(processes)
    idle = time.monotonic() - last_request
    assert 1.9 <= idle < 6, idle
    assert not [proc for proc in found if proc.is_render_worker and proc.alive()]
    assert_all_gone(found)


EMBEDDING_SCRIPT = """
import pathlib, sys, time
from openai import OpenAI
from sora_tasks.emulator import EmulatorConfig, start_emulator

emulator = start_emulator(EmulatorConfig(render_seconds=0.5))
client = OpenAI(base_url=emulator.base_url, api_key="sk-any", max_retries=0)
for n in range(2):
    client.videos.create(prompt=f"embedded {n}", size="1280x720")
pathlib.Path(sys.argv[1]).write_text(emulator.base_url)
time.sleep(120)
"""


def test_sigkill_of_a_process_embedding_the_emulator_takes_its_workers_along(processes: Processes) -> None:
    ready = processes.tmp_path / "ready"
    process = processes.start([sys.executable, "-c", EMBEDDING_SCRIPT, str(ready)], "embedding.log")
    assert wait_until(lambda: ready.exists() or process.poll() is not None, 60), log_of(processes, "embedding.log")
    assert process.poll() is None, log_of(processes, "embedding.log")
    found = processes.children_once_rendering(process.pid, expected_workers())
    process.kill()
    process.wait(10)
    assert_all_gone(found)


ORPHAN_SCRIPT = """
import os, pathlib, sys, time
from sora_tasks.emulator.workers import start_orphan_watch

start_orphan_watch(os.getppid())
pathlib.Path(sys.argv[1]).write_text("watching")
time.sleep(120)
"""


def test_orphan_watch_alone_ends_a_worker_whose_parent_was_killed(processes: Processes) -> None:
    """The portable fallback, without PR_SET_PDEATHSIG: polling the parent pid is enough."""
    ready = processes.tmp_path / "ready"
    spawn_child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {ORPHAN_SCRIPT!r}, {str(ready)!r}])"
    parent = processes.start([sys.executable, "-c", spawn_child], "orphan.log")
    assert wait_until(lambda: ready.exists() or parent.poll() is not None, 60), log_of(processes, "orphan.log")
    [child] = children(parent.pid)
    processes.found.append(child)
    parent.kill()
    parent.wait(10)
    assert_all_gone([child], within=2.0)


def short_job(state: EmulatorState) -> Job:
    return state.create_job(model="sora-2", prompt="short-lived caller", seconds="4", size="720x1280")


def test_workers_started_for_a_thread_that_has_ended_keep_rendering() -> None:
    """PDEATHSIG fires when the thread that started a worker ends: workers start in a thread of their own."""
    state = EmulatorState(config=EmulatorConfig(render_seconds=0.1, render_workers=1))
    try:
        # The caller's thread lives until the worker has rendered (so has run its initializer), then ends.
        rendered = []
        thread = threading.Thread(target=lambda: rendered.append(short_job(state).render.result(timeout=60)))
        thread.start()
        thread.join()
        assert rendered and rendered[0].video.stat().st_size > 0
        time.sleep(0.5)  # a worker that got PDEATHSIG is gone by now, and the pool broken
        assert state.pool.submit(os.getpid).result(timeout=30) != os.getpid()
    finally:
        state.close()
