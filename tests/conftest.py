"""Shared test servers: the Sora emulator and a moto S3 server, both real HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: no telemetry, results kept in a throwaway place.
_PREFECT_HOME = tempfile.mkdtemp(prefix="prefect-sora-tests-")
os.environ.update(
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_HOME=_PREFECT_HOME,
    PREFECT_LOCAL_STORAGE_PATH=os.path.join(_PREFECT_HOME, "storage"),
    PREFECT_LOGGING_LEVEL="INFO",
    # The CLI's own state (background services, receipts, default ledger) stays in the session.
    SORA_HOME=os.path.join(_PREFECT_HOME, "sora-home"),
)
# A sentinel key: the secrets test searches every output for it.
SENTINEL_API_KEY = "sk-test-SENTINEL-0123456789abcdef"
SENTINEL_AWS_SECRET = "aws-SENTINEL-secret-9876543210"
os.environ["OPENAI_API_KEY"] = SENTINEL_API_KEY
os.environ.pop("OPENAI_BASE_URL", None)


from sora_tasks.emulator import EmulatorConfig, EmulatorServer, start_emulator  # noqa: E402

from .waiting import wait_until_answering  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="session", autouse=True)
def prefect_backend() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session", autouse=True)
def background_services() -> Iterator[None]:
    """Whatever `sora-video` started in the background during the session is stopped at its end."""
    yield
    from sora_tasks.cli import services

    for name in ("prefect", "emulator"):
        services.stop(name)


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
    emulator_server.state.config.hosted_shutdown = False
    emulator_server.faults.retry_after_seconds = 0.2
    return emulator_server


@pytest.fixture(scope="module")
def prefect_server_env() -> Iterator[dict[str, str]]:
    """A real `prefect server start` on 127.0.0.1; yields the variables that point a client at it.

    Module-scoped: each module registers deployments of the same names its own way
    (`prefect deploy`, `python -m sora_tasks.deployments.serve`), so modules must not share one.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {
        "PREFECT_HOME": tempfile.mkdtemp(prefix="prefect-server-"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **settings},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_answering(f"{settings['PREFECT_API_URL']}/health", what="Prefect server", timeout=90, process=server)
        yield settings
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


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
    wait_until_answering(f"{endpoint}/moto-api/", what="moto server", timeout=60, process=server, ok_below=500)
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


# LiteLLM's proxy lives in its own virtual environment (its FastAPI pins would fight
# Prefect's); `make test` installs it there. Without it these tests skip, saying why.
LITELLM_BIN = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv-litellm", "bin", "litellm"
)


@pytest.fixture(scope="session")
def litellm_proxy(emulator_server: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real LiteLLM proxy on 127.0.0.1 routing sora-2 to the emulator; yields its base URL."""
    if not os.path.exists(LITELLM_BIN):
        pytest.skip(f"LiteLLM proxy not installed at {LITELLM_BIN} (`make litellm`; its install failed or was skipped)")
    config = tmp_path_factory.mktemp("litellm") / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: sora-2\n"
        "    litellm_params:\n"
        "      model: openai/sora-2\n"
        f"      api_base: {emulator_server.base_url}\n"
        "      api_key: sk-upstream-for-the-emulator\n"
        "general_settings:\n"
        "  dangerously_permit_weak_or_unset_master_key: true\n"
        # The proxy's own retries would re-send a create: a second paid job.
        "router_settings:\n"
        "  num_retries: 0\n"
        "litellm_settings:\n"
        "  num_retries: 0\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(config.with_name("proxy.log"), "wb")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [LITELLM_BIN, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"},
    )
    try:
        wait_until_answering(
            f"http://127.0.0.1:{port}/health/liveliness", what="LiteLLM proxy", timeout=120, process=server
        )
    except RuntimeError as error:
        server.kill()
        log.close()
        raise RuntimeError(f"{error}:\n{config.with_name('proxy.log').read_text()[-3000:]}") from error
    yield f"http://127.0.0.1:{port}/v1"
    server.terminate()
    server.wait(timeout=20)
    log.close()
