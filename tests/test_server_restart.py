"""The Prefect server restarted in the middle of a batch: nothing is lost and nothing is paid twice.

Paid jobs and deliveries are recorded in S3 (receipts), not in the Prefect server, so
whatever the run itself makes of the outage, a rerun afterwards pays only for rows no
job was made for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .waiting import wait_until_answering

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

BATCH = """
import json, sys
from sora_tasks.flows.batch import generate_videos
from sora_tasks import BatchFailedError
from sora_tasks.blocks import VideosApi
try:
    rows = generate_videos(manifest=sys.argv[1], output_prefix=sys.argv[2], max_in_flight=5,
                           api=VideosApi(base_url=sys.argv[3], poll_interval=0.2))
except BatchFailedError as error:
    rows = error.rows
print(json.dumps(rows))
"""


class Server:
    """`prefect server start` on a fixed port and home, so it can be stopped and started again."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.env = {
            **os.environ,
            "PREFECT_HOME": tempfile.mkdtemp(prefix="prefect-restart-"),
            "PREFECT_API_URL": f"http://127.0.0.1:{self.port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until_answering(f"{self.env['PREFECT_API_URL']}/health", what="Prefect server", timeout=90)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    running.start()
    yield running
    running.stop()


def run_batch(server: Server, manifest: str, prefix: str, base_url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", BATCH, manifest, prefix, base_url],
        env={**server.env, "PREFECT_HOME": tempfile.mkdtemp(prefix="batch-")},
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_server_restart_mid_batch_loses_nothing_and_pays_nothing_twice(
    server: Server, emulator, s3, bucket: str
) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 3.0
    tag = uuid.uuid4().hex[:6]
    rows = "".join(json.dumps({"prompt": f"restart row {n} {tag}"}) + "\n" for n in range(10))
    s3.put_object(Bucket=bucket, Key="restart.jsonl", Body=rows.encode())
    manifest, prefix = f"s3://{bucket}/restart.jsonl", f"s3://{bucket}/restart"
    first = run_batch(server, manifest, prefix, emulator.base_url)
    deadline = time.monotonic() + 120
    while emulator.state.jobs_created < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert emulator.state.jobs_created >= 5, "the batch never got going"
    server.stop()  # mid-render: five jobs paid for, none delivered yet
    time.sleep(3)
    server.start()
    try:
        first.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        first.kill()
        first.communicate()
    # Whatever the first run made of the outage (recovered, or failed), the rerun completes it.
    again = run_batch(server, manifest, prefix, emulator.base_url)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-4000:]
    outcome: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
    assert [row["status"] for row in outcome] == ["delivered"] * 10, outcome
    assert emulator.state.count("create") == 10 and emulator.state.jobs_created == 10
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="restart/")["Contents"]]
    videos = {key for key in keys if key.endswith(".mp4")}
    assert len(videos) == 10  # and previews beside them, each beside its video
    assert all(key.rsplit(".", 2)[0] + ".mp4" in videos for key in set(keys) - videos)
