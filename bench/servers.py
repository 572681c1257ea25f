"""The benchmark's servers, each in its own process as the real ones would be remote.

Keeping the emulator and moto out of the measured process matters: sharing its GIL
would bill their request handling to the flow under test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_up(process: subprocess.Popen[bytes], url: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.2)


@contextmanager
def emulator(render_seconds: float, request_log: Path, pad_bytes: int = 0) -> Iterator[str]:
    """A `sora-emulator` process; yields its base URL. Renders are shared per size/duration."""
    port = free_port()
    command = [
        str(BIN / "sora-emulator"),
        "--port", str(port),
        "--render-seconds", str(render_seconds),
        "--poll-after-ms", "250",
        "--reuse-renders",
        "--pad-bytes", str(pad_bytes),
        "--request-log", str(request_log),
    ]  # fmt: skip
    # Its own process group: its render workers outlive a SIGTERM to it alone.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_until_up(process, f"http://127.0.0.1:{port}/v1/models", "sora-emulator")
        _encode_shared_clip(f"http://127.0.0.1:{port}/v1")
        request_log.unlink(missing_ok=True)  # the log counts the measured requests only
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_group(process)


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's programs (Debian's postgresql package), if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda path: int(path.parts[-3]))
    return found[-1].parent if found else None


@contextmanager
def postgres(home: Path) -> Iterator[str | None]:
    """A PostgreSQL cluster of its own in ``home`` (yields its SQLAlchemy URL), or None when none is installed.

    Prefect's server on SQLite answers 503 ("database is locked") once several processes
    write task runs and concurrency slots at once, and its client then backs off for
    seconds; Prefect's docs name PostgreSQL for any server with concurrent writers.
    """
    bindir = postgres_bin()
    if bindir is None:
        yield None
        return
    as_owner: list[str] = []
    if os.getuid() == 0:  # initdb refuses to run as root: the package's postgres user owns the cluster
        # In a folder of its own under the system's temporary folder: the postgres user cannot
        # pass through the benchmark's scratch folder (mode 0700, root's).
        home = Path(tempfile.mkdtemp(prefix="sora-bench-postgres-"))
        subprocess.run(["chown", "-R", "postgres", str(home)], check=True)
        as_owner = ["runuser", "-u", "postgres", "--"]
    data = home / "pgdata"
    run = lambda *command: subprocess.run([*as_owner, *command], check=True, capture_output=True, timeout=120)  # noqa: E731
    run("mkdir", "-p", str(data))
    port = free_port()
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "prefect", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "postgres.log"), "-w", "-o",
        f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")  # fmt: skip
    try:
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        if as_owner:
            shutil.rmtree(home, ignore_errors=True)


@contextmanager
def prefect_server(home: Path, database_url: str | None = None) -> Iterator[str]:
    """A real `prefect server start` process (workers need one); yields its API URL.

    The other parts use the in-process test harness; a `prefect worker start` process
    and the flow runs it starts need a server of their own to reach. ``database_url``:
    its database (default: SQLite in ``home``).
    """
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    # Its log (the requests it answered, e.g. a 503 from a locked database) stays in ``home``.
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(process, f"http://127.0.0.1:{port}/api/health", "prefect server", timeout=120)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop_group(process)
        log.close()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process and its children (one process group), then SIGKILL what is left of it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):  # it is killed below either way
        process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)


def _encode_shared_clip(base_url: str) -> None:
    """One job before the clock starts, so the emulator has encoded the clip it serves.

    With --reuse-renders every job shares one encode; made during a measured run,
    it would make the first wave take T plus an encode that competes with the code
    under test for the CPU, and T would not be the render time any more.
    """
    body = {"prompt": "warm-up", "model": "sora-2", "seconds": "4", "size": "1280x720"}
    with httpx.Client(base_url=base_url, headers={"Authorization": "Bearer sk-bench"}, timeout=60) as client:
        job = client.post("/videos", json=body).raise_for_status().json()
        deadline = time.monotonic() + 120
        while client.get(f"/videos/{job['id']}").json()["status"] != "completed":
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator did not finish its warm-up render")
            time.sleep(0.05)


@contextmanager
def moto_s3() -> Iterator[dict[str, str]]:
    """A moto S3 server process; yields the AWS environment that points boto3 at it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, f"{endpoint}/moto-api/", "moto server")
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def count_requests(request_log: Path) -> Counter[str]:
    """Requests per endpoint kind ('create', 'retrieve', 'content', ...) from the emulator's log."""
    if not request_log.exists():
        return Counter()
    lines = request_log.read_text(encoding="utf-8").splitlines()
    return Counter(json.loads(line)["endpoint"] for line in lines if line.strip())


def request_span(request_log: Path) -> tuple[float, float]:
    """When the first create arrived and when the last download's answer was sent."""
    records = [json.loads(line) for line in request_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    first_create = min(record["at"] for record in records if record["endpoint"] == "create")
    last_download = max(record["at"] + record["seconds"] for record in records if record["endpoint"] == "content")
    return first_create, last_download


def peak_rendering(request_log: Path) -> int:
    """Most jobs rendering at once: from each create to the answer that first told a client its job ended.

    As tests/test_batch.py's ``peak_jobs_in_flight`` counts them, from the request log
    alone (each answer lists the jobs it was first to report ended): a create's request
    starts after its render slot is taken, and that answer is sent before the slot is
    given back, so this never overstates the peak.
    """
    records = [json.loads(line) for line in request_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    events = [(record["at"], 1) for record in records if record["endpoint"] == "create"]
    events += [(record["at"], -1) for record in records for _ in record.get("ended", ())]
    peak = alive = 0
    for _, change in sorted(events):
        alive += change
        peak = max(peak, alive)
    return peak


def child_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}
