"""A batch spread over two real `prefect worker start` processes, with no shared local disk.

`prefect server start`, the emulator and moto run as servers on 127.0.0.1; each worker
has its own PREFECT_HOME and working directory, so only the Prefect server and S3 are
shared. The parent batch runs in a process of its own, as a user's would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .media import sha256
from .prefect_api import prefect_api
from .test_batch import peak_jobs_in_flight

PROJECT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RENDER_LIMIT = 5

pytestmark = pytest.mark.slow

PARENT = """
import json, sys
from sora_tasks.flows.batch import generate_videos
from sora_tasks.flows.spread import Spread
from sora_tasks import BatchFailedError
manifest, prefix, shards, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
try:
    rows = generate_videos(manifest=manifest, output_prefix=prefix, api="sora-spread", max_in_flight=4,
                           spread=Spread(shards=shards, work_pool="sora", **options))
except BatchFailedError as error:
    rows = error.rows
print(json.dumps(rows))
"""


def prefect(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def prepare_spread_server(server_env: dict[str, str], emulator_server: Any, render_limit: int) -> dict[str, str]:
    """Work pool `sora`, the `shard` deployment, the render limit `sora-rendering` and the block `sora-spread`."""
    env = {**os.environ, **server_env, "SORA_PROJECT_DIR": str(PROJECT)}
    prefect(env, "work-pool", "create", "sora", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--name", "shard")
    prefect(env, "gcl", "create", "sora-rendering", "--limit", str(render_limit))
    save = (
        "from sora_tasks.blocks import VideosApi\n"
        f"VideosApi(base_url={emulator_server.base_url!r}, poll_interval=0.1, "
        "render_limit_name='sora-rendering').save('sora-spread', overwrite=True)\n"
    )
    subprocess.run([sys.executable, "-c", save], env=env, cwd=PROJECT, check=True, timeout=120)
    return env


@pytest.fixture(scope="module")
def spread_server(
    prefect_server_env: dict[str, str], s3_endpoint: str, emulator_server: Any
) -> Iterator[dict[str, str]]:
    yield prepare_spread_server(prefect_server_env, emulator_server, RENDER_LIMIT)


def start_worker(env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    """A worker with a PREFECT_HOME and working directory of its own: nothing on disk is shared."""
    home = tempfile.mkdtemp(prefix=f"worker-{name}-")
    return subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "sora", "--name", name, "--limit", "4"],
        env={**env, "PREFECT_HOME": home, "PREFECT_LOCAL_STORAGE_PATH": os.path.join(home, "storage")},
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc (a worker's flow runs run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: set[int] = set()
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            if child not in found:
                found.add(child)
                queue.append(child)
    return found


def kill_machine(process: subprocess.Popen[Any]) -> None:
    """SIGKILL ``process`` and every process it started, as if their machine died.

    Prefect's process worker starts each flow run in a session of its own, so killing the
    worker's process group leaves its flow runs running. Every process is stopped first
    (SIGSTOP), so none can start another or be reparented before all are killed.
    """
    stopped: set[int] = set()
    while tree := ({process.pid} | descendants(process.pid)) - stopped:
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= tree
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)


def start_parent(
    env: dict[str, str], manifest: str, prefix: str, shards: int = 4, **spread: Any
) -> subprocess.Popen[str]:
    """The parent batch in a process of its own; ``spread``: more Spread fields."""
    home = tempfile.mkdtemp(prefix="parent-")  # a fresh machine each time: no cache survives
    return subprocess.Popen(
        [sys.executable, "-c", PARENT, manifest, prefix, str(shards), json.dumps(spread)],
        env={**env, "PREFECT_HOME": home},
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(parent: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = parent.communicate(timeout=600)
    assert parent.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def shards_once_ended(api_url: str, *, timeout: float = 60) -> list[dict[str, Any]]:
    """Every shard flow run on the server, once none is Scheduled, Pending or Running (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        shards: list[dict[str, Any]] = prefect_api(
            "POST", "/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["shard"]}}, "limit": 50}, api_url=api_url
        )
        if time.monotonic() > deadline or not any(
            run["state_type"] in ("SCHEDULED", "PENDING", "RUNNING") for run in shards
        ):
            return shards
        time.sleep(0.5)


def put_manifest(s3: Any, bucket: str, key: str, prompts: list[str]) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body="".join(json.dumps({"prompt": p}) + "\n" for p in prompts).encode())
    return f"s3://{bucket}/{key}"


def test_spread_refuses_what_other_machines_cannot_see_before_paying(  # type: ignore[no-untyped-def]
    spread_server: dict[str, str], emulator, s3, bucket: str, tmp_path: Path
) -> None:
    local = tmp_path / "m.jsonl"
    local.write_text('{"prompt": "x"}\n')
    s3_manifest = put_manifest(s3, bucket, "manifests/refuse.jsonl", ["x", "y"])
    cases = {
        f"manifest={str(local)!r}, output_prefix='s3://{bucket}/o', spread=Spread()": "manifest",
        f"manifest={s3_manifest!r}, output_prefix={str(tmp_path)!r}, spread=Spread()": "output_prefix",
        f"manifest={s3_manifest!r}, output_prefix='s3://{bucket}/o', spread=Spread(shards=0)": "shards must be at least 1",
        f"manifest={s3_manifest!r}, output_prefix='s3://{bucket}/o', spread=Spread(work_pool='nope')": "no work pool named 'nope'",
        f"manifest={s3_manifest!r}, output_prefix='s3://{bucket}/o', spread=Spread(deployment='generate-videos/nope')": "no deployment named",
        f"manifest={s3_manifest!r}, output_prefix='s3://{bucket}/o', api=VideosApi(), spread=Spread()": "api: a spread batch needs a saved block",
    }
    for arguments, says in cases.items():
        code = (
            "from sora_tasks.flows.batch import generate_videos\nfrom sora_tasks.flows.spread import Spread\n"
            "from sora_tasks.blocks import VideosApi\n"
            f"generate_videos({arguments}, state='s3://{bucket}/state')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], env=spread_server, cwd=PROJECT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode != 0 and says in done.stderr, (arguments, done.stderr[-2000:])
    # Nothing was paid for the refused batches (workers of earlier tests may still be polling).
    assert [job.id for job in emulator.state.listing() if job.prompt in ("x", "y")] == []


def test_forty_rows_over_two_workers_then_reruns_pay_only_for_what_is_missing(  # type: ignore[no-untyped-def]
    spread_server: dict[str, str], emulator, s3, bucket: str
) -> None:
    emulator.state.config.render_seconds = 1.0
    tag = uuid.uuid4().hex[:6]
    prompts = [f"spread row {n} {tag}" for n in range(40)]
    manifest = put_manifest(s3, bucket, "manifests/forty.jsonl", prompts)
    workers = [start_worker(spread_server, "a"), start_worker(spread_server, "b")]
    try:
        rows = finish(start_parent(spread_server, manifest, f"s3://{bucket}/out"))
        assert [row["status"] for row in rows] == ["delivered"] * 40, rows
        assert [row["row"] for row in rows] == list(range(1, 41))
        assert emulator.state.jobs_created == 40 and emulator.state.count("create") == 40
        assert peak_jobs_in_flight(emulator) <= RENDER_LIMIT
        for row in rows:
            body = s3.get_object(Bucket=bucket, Key=row["uri"].removeprefix(f"s3://{bucket}/"))["Body"].read()
            assert sha256(body) == sha256(emulator.state.get(row["video_id"]).render.result().video.read_bytes())
        # The parent returns once every block is finished; a shard still running then has
        # nothing left and ends by itself within seconds.
        shards = shards_once_ended(spread_server["PREFECT_API_URL"])
        # A shard no worker had started when the last block was taken is cancelled, not started for nothing.
        assert len(shards) == 4 and {run["state_type"] for run in shards} <= {"COMPLETED", "CANCELLED"}, shards
        assert all(
            run["state"]["message"].startswith("Not started") for run in shards if run["state_type"] == "CANCELLED"
        )

        # A new machine: no Prefect cache, no local state. Everything is already delivered.
        again = finish(start_parent(spread_server, manifest, f"s3://{bucket}/out"))
        assert [row["how"] for row in again] == ["already delivered"] * 40
        assert [row["uri"] for row in again] == [row["uri"] for row in rows]
        assert emulator.state.count("create") == 40

        # One prompt changed: exactly one new job.
        prompts[17] = f"a changed row {tag}"
        changed = finish(
            start_parent(
                spread_server, put_manifest(s3, bucket, "manifests/forty.jsonl", prompts), f"s3://{bucket}/out"
            )
        )
        assert emulator.state.count("create") == 41
        assert [row["how"] for row in changed].count("created") == 1 and changed[17]["how"] == "created"
    finally:
        for worker in workers:
            kill_machine(worker)  # and any shard it still runs (a flow run has a session of its own)


def test_a_worker_killed_mid_batch_costs_nothing_extra_on_the_rerun(  # type: ignore[no-untyped-def]
    spread_server: dict[str, str], emulator, s3, bucket: str
) -> None:
    emulator.state.config.render_seconds = 2.0
    tag = uuid.uuid4().hex[:6]
    manifest = put_manifest(s3, bucket, "manifests/kill.jsonl", [f"killed row {n} {tag}" for n in range(40)])
    doomed, survivor = start_worker(spread_server, "doomed"), start_worker(spread_server, "survivor")
    parent = start_parent(spread_server, manifest, f"s3://{bucket}/kill")
    try:
        deadline = time.monotonic() + 120
        while emulator.state.jobs_created < 12 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert emulator.state.jobs_created >= 12, "the batch never got going"
        kill_machine(doomed)  # the worker and the flow runs it started, mid-render
        stop(parent, signal.SIGKILL)  # its doomed shards would never report
        rows = finish(start_parent(spread_server, manifest, f"s3://{bucket}/kill"))
    finally:
        stop(parent, signal.SIGKILL)
        # Every process the workers started too: a shard left running would pay into a later test.
        kill_machine(doomed)
        kill_machine(survivor)
    assert [row["status"] for row in rows] == ["delivered"] * 40, rows
    assert emulator.state.count("create") <= 40 and emulator.state.jobs_created <= 40
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="kill/")["Contents"]]
    videos = {key for key in keys if key.endswith(".mp4")}
    assert len(videos) == len({row["uri"] for row in rows}) == 40
    # The rest are previews, each beside its video (a row killed between its video and its
    # previews is already delivered on the rerun, and keeps what it has).
    assert all(key.rsplit(".", 2)[0] + ".mp4" in videos for key in set(keys) - videos)
    assert {row["how"] for row in rows} <= {"created", "resumed", "already delivered"}
