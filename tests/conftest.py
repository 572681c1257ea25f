"""Shared test servers: the Sora emulator and a moto S3 server, both real HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

# Before Prefect is imported anywhere: no telemetry, results kept in a throwaway place.
_PREFECT_HOME = tempfile.mkdtemp(prefix="prefect-sora-tests-")
os.environ.update(
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_HOME=_PREFECT_HOME,
    PREFECT_LOCAL_STORAGE_PATH=os.path.join(_PREFECT_HOME, "storage"),
    PREFECT_LOGGING_LEVEL="INFO",
)
# A sentinel key: the secrets test searches every output for it.
SENTINEL_API_KEY = "sk-test-SENTINEL-0123456789abcdef"
SENTINEL_AWS_SECRET = "aws-SENTINEL-secret-9876543210"
os.environ["OPENAI_API_KEY"] = SENTINEL_API_KEY
os.environ.pop("OPENAI_BASE_URL", None)

import httpx  # noqa: E402

from sora_tasks.emulator import EmulatorConfig, EmulatorServer, start_emulator  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="session", autouse=True)
def prefect_backend() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    server = start_emulator(EmulatorConfig(render_seconds=0.5, poll_after_ms=100))
    yield server
    server.stop()


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    """The shared emulator with jobs, counters and faults cleared for this test."""
    emulator_server.state.reset()
    emulator_server.state.config.render_seconds = 0.5
    emulator_server.state.config.asset_ttl_seconds = 3600.0
    emulator_server.state.config.api_key = None
    emulator_server.faults.retry_after_seconds = 0.2
    return emulator_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in its own process, as a real endpoint would be."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{endpoint}/moto-api/", timeout=2).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "moto server did not start"
        time.sleep(0.2)
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="AKIATESTSENTINEL",
        AWS_SECRET_ACCESS_KEY=SENTINEL_AWS_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3")


@pytest.fixture
def bucket(s3) -> str:  # type: ignore[no-untyped-def]
    name = f"videos-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def unique_prompt() -> str:
    """Prompts differ per test so create caching never joins two tests' jobs."""
    return f"A paper boat sails down a rainy street ({uuid.uuid4().hex[:8]})"
