"""Background services the CLI starts once and reuses: the emulator and, on request, a Prefect server.

``sora-video up`` / ``down`` / ``ps`` manage them; a keyless call starts the emulator on
demand. Each service is a detached process (its own session, so a Ctrl-C in the shell
that started it does not stop it) described by a small JSON file under
``$SORA_HOME/services``: pid, URL, log file. A service counts as running only while its
process lives *and* its URL answers, so a stale file from a crashed run is ignored.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.storage.records import sora_home

EMULATOR_KEY = "sk-emulator"
# An emulator started on demand exits after this long without a request: its videos
# expire after an hour anyway, and its render workers hold memory.
AUTO_IDLE_EXIT = 3600.0
EMULATOR_START_TIMEOUT = 30.0
PREFECT_START_TIMEOUT = 120.0


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    url: str
    log: str
    started_at: float
    on_demand: bool = False

    def describe(self) -> str:
        up = time.time() - self.started_at
        since = f"{up / 3600:.1f} h" if up >= 3600 else f"{up / 60:.0f} min" if up >= 60 else f"{up:.0f} s"
        how = ", started on demand" if self.on_demand else ""
        return f"{self.name:<9} {self.url:<34} pid {self.pid:<7} up {since}{how}  log {self.log}"


def services_dir() -> Path:
    return sora_home() / "services"


def _state_path(name: str) -> Path:
    return services_dir() / f"{name}.json"


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One starter at a time: two shells calling at once must not start two emulators."""
    services_dir().mkdir(parents=True, exist_ok=True)
    with (services_dir() / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not a running service.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    return True


def _answers(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as answer:
            return bool(200 <= answer.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _health_url(service: Service) -> tuple[str, dict[str, str]]:
    if service.name == "emulator":
        return f"{service.url}/videos?limit=1", {"Authorization": f"Bearer {EMULATOR_KEY}"}
    return f"{service.url}/health", {}


def running(name: str) -> Service | None:
    """The recorded service if its process lives and it answers; else None (stale record removed)."""
    path = _state_path(name)
    try:
        service = Service(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(service.pid) and _answers(*_health_url(service)):
        return service
    if not _alive(service.pid):
        path.unlink(missing_ok=True)
    return None


def _record(service: Service) -> None:
    partial = _state_path(service.name).with_suffix(".part")
    partial.write_text(json.dumps(asdict(service)))
    os.replace(partial, _state_path(service.name))


def _spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )


def _log_tail(log: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return ""


def ensure_emulator(*, on_demand: bool = True, render_seconds: float = 3.0) -> Service:
    """The running emulator, started now if there is none."""
    found = running("emulator")
    if found is not None:
        return found
    with _locked("emulator"):
        found = running("emulator")
        if found is not None:
            return found
        url_file = services_dir() / "emulator.url"
        url_file.unlink(missing_ok=True)
        log = services_dir() / "emulator.log"
        command = [
            sys.executable, "-m", "sora_tasks.emulator", "--host", "127.0.0.1", "--port", "0",
            "--url-file", str(url_file), "--render-seconds", str(render_seconds), "--poll-after-ms", "250",
        ]  # fmt: skip
        if on_demand:
            command += ["--idle-exit", str(AUTO_IDLE_EXIT)]
        process = _spawn(command, log)
        deadline = time.monotonic() + EMULATOR_START_TIMEOUT
        while not url_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the Sora emulator did not start; its log ({log}):\n{_log_tail(log)}")
            time.sleep(0.02)
        service = Service("emulator", process.pid, url_file.read_text().strip(), str(log), time.time(), on_demand)
        _record(service)
        return service


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ensure_prefect_server(port: int | None = None) -> Service:
    """A local ``prefect server start`` on 127.0.0.1, started now if there is none."""
    found = running("prefect")
    if found is not None:
        return found
    with _locked("prefect"):
        found = running("prefect")
        if found is not None:
            return found
        port = port or _free_port()
        log = services_dir() / "prefect.log"
        prefect = Path(sys.executable).with_name("prefect")
        command = [str(prefect)] if prefect.exists() else [sys.executable, "-m", "prefect"]
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        process = _spawn([*command, "server", "start", "--host", "127.0.0.1", "--port", str(port)], log, env)
        service = Service("prefect", process.pid, f"http://127.0.0.1:{port}/api", str(log), time.time())
        deadline = time.monotonic() + PREFECT_START_TIMEOUT
        while not _answers(f"{service.url}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process.pid)
                raise RuntimeError(f"the Prefect server did not start; its log ({log}):\n{_log_tail(log)}")
            time.sleep(0.25)
        _record(service)
        return service


def stop_process(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the service's whole process group, then SIGKILL what outlives ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if not _alive(pid):
            return


def stop(name: str) -> Service | None:
    """Stop a recorded service; returns what was stopped (None if nothing was running)."""
    path = _state_path(name)
    try:
        service = Service(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(service.pid):
        stop_process(service.pid)
    path.unlink(missing_ok=True)
    return service


def is_emulator_url(url: str | None) -> bool:
    """Whether ``url`` is the background emulator's (its jobs need the emulator's key)."""
    if not url:
        return False
    with contextlib.suppress(OSError, ValueError, TypeError):
        recorded = json.loads(_state_path("emulator").read_text())
        return bool(recorded.get("url", "").rstrip("/") == url.rstrip("/"))
    return False
