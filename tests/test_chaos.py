"""Chaos: a 60-row spread batch over three real workers while a seeded schedule kills them and the parent.

One `prefect server start`, moto S3 and the emulator, all on 127.0.0.1; three `prefect
worker start` processes, each with a PREFECT_HOME and working directory of its own. Four
rounds, each a fresh 60-row batch taken in blocks by four shards and the parent, under a
render limit of 6: in three of them one busy worker dies with every process it started
(SIGKILL: a machine dying) and a replacement starts; in one the parent dies and is run
again. Which round loses its
parent, after how many creates each kill comes and which busy worker dies are drawn from
``random.Random(SEED)`` (``SORA_CHAOS_SEED`` to replay another), and printed.

After each round: every row delivered once (60 distinct objects, 60 `delivered` rows),
creates equal to the rows (nothing paid twice despite the kill), no flow run left Running
or Pending, no render slot held. A killed shard must be marked Crashed by the spread's
parent itself (it reads the shards' heartbeats; no automation is installed then); the
dead parent's own run is marked by the shipped zombie automation, which the parent round
installs with ``within`` at three of the test's 30 s heartbeat periods.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from .prefect_api import prefect_api
from .test_batch import peak_jobs_in_flight
from .test_spread import (
    BIN,
    PROJECT,
    descendants,
    finish,
    kill_machine,
    prepare_spread_server,
    put_manifest,
    start_parent,
    start_worker,
    stop,
)
from .waiting import wait_until_answering

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("SORA_CHAOS_SEED", "23"))
ROWS = 60
SHARDS = 4
RENDER_LIMIT = 6
LIMIT_NAME = "sora-rendering"
HEARTBEAT_SECONDS = 30  # Prefect's shortest
# The parent takes a shard for dead after 2.5 silent heartbeat periods (its default is 3).
DEAD_AFTER_SECONDS = 75
# sora_tasks.tasks.RENDER_LEASE_SECONDS: a dead holder's slots come back only when their
# lease runs out (then within the repossessor's loop, 2 s here).
LEASE_SECONDS = 120
WORKER_ENV = {
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
}
ZOMBIE_FILE = PROJECT / "sora_tasks" / "automations" / "crash-zombie-flow-runs.yaml"
ZOMBIE_WITHIN = 3 * HEARTBEAT_SECONDS
PARENT_MARK = "marked Crashed by the spread batch's parent"
# A worker is killed once one of its shards has been Running this long (seconds).
RUNNING_FOR = 5


@dataclass(frozen=True)
class Kill:
    """One round's fault: whom it kills, once the round has made how many jobs, and which busy worker."""

    target: str  # "worker" or "parent"
    after_creates: int
    pick: float  # in [0, 1): which of the busy workers, sorted by name


def schedule(seed: int) -> list[Kill]:
    rng = random.Random(seed)
    targets = ["worker", "worker", "worker", "parent"]
    rng.shuffle(targets)
    return [Kill(target, rng.randint(6, 36), rng.random()) for target in targets]


@pytest.fixture(scope="module")
def chaos_server(emulator_server: Any, s3_endpoint: str) -> Iterator[dict[str, str]]:
    """A `prefect server start` of this module's own: its repossessor frees dead leases within 2 s of expiry."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {
        "PREFECT_HOME": tempfile.mkdtemp(prefix="prefect-chaos-server-"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **settings, "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_answering(f"{settings['PREFECT_API_URL']}/health", what="Prefect server", timeout=90, process=server)
        yield {**prepare_spread_server(settings, emulator_server, RENDER_LIMIT), **WORKER_ENV}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


class Workers:
    """Three live workers, named w1, w2, ... in the order they started."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started = 0
        self.live: dict[str, subprocess.Popen[bytes]] = {}
        for _ in range(3):
            self.start()

    def start(self) -> str:
        self.started += 1
        name = f"w{self.started}"
        self.live[name] = start_worker(self.env, name)
        return name

    def busy(self, api_url: str) -> dict[str, list[dict[str, Any]]]:
        """The shard runs each live worker is running now (by the process ids below it)."""
        taken = flow_runs(api_url, ["PENDING", "RUNNING"], tags=["shard"])
        found: dict[str, list[dict[str, Any]]] = {}
        for name, worker in sorted(self.live.items()):
            below = {str(pid) for pid in descendants(worker.pid)}
            mine = [run for run in taken if str(run.get("infrastructure_pid") or "").rsplit(":", 1)[-1] in below]
            if mine:
                found[name] = mine
        return found

    def kill(self, name: str) -> None:
        kill_machine(self.live.pop(name))

    def stop_all(self) -> None:
        for worker in self.live.values():
            kill_machine(worker)  # and the shards it runs: none may pay into a later test


def flow_runs(api_url: str, states: list[str], tags: list[str] | None = None) -> list[dict[str, Any]]:
    flow_run_filter: dict[str, Any] = {"state": {"type": {"any_": states}}}
    if tags:
        flow_run_filter["tags"] = {"all_": tags}
    return prefect_api(  # type: ignore[no-any-return]
        "POST", "/flow_runs/filter", json={"flow_runs": flow_run_filter, "limit": 200}, api_url=api_url
    )


@contextmanager
def prefect_client(api_url: str) -> Iterator[Any]:
    """Prefect's own client, pointed at ``api_url`` (this process's default is the in-process harness)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        yield client


def slots_held(api_url: str) -> int:
    """The render limit's active slots."""
    with prefect_client(api_url) as client:
        return int(client.read_global_concurrency_limit_by_name(LIMIT_NAME).active_slots)


def claim_of_run_is_over(api_url: str, flow_run_id: str) -> bool | None:
    """What a run on another machine concludes about a claim held by ``flow_run_id`` (pid checks do not apply)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import sora_tasks.tasks  # noqa: F401  (registers the flow-run check claims use)
    from sora_tasks.core.storage.claims import ClaimOwner

    owner = ClaimOwner("another-machine", 1, None, flow_run_id, "chaos")
    with temporary_settings({PREFECT_API_URL: api_url}):
        return owner.is_gone()


class ZombieAutomation:
    """The shipped zombie automation, applied with ``within`` for this test's heartbeats, then deleted."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        data = yaml.safe_load(ZOMBIE_FILE.read_text())
        data["trigger"]["within"] = ZOMBIE_WITHIN
        self.name = data["name"]
        self.message = data["actions"][0]["message"]
        self.path = folder / "zombies.yaml"
        self.path.write_text(yaml.safe_dump(data))
        self.env = env

    def __enter__(self) -> ZombieAutomation:
        subprocess.run(
            [sys.executable, "-m", "sora_tasks.deployments.automations", str(self.path)],
            env=self.env,
            cwd=PROJECT,
            check=True,
            capture_output=True,
            timeout=120,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        with prefect_client(self.env["PREFECT_API_URL"]) as client:
            for automation in client.read_automations_by_name(self.name):
                client.delete_automation(automation.id)


@dataclass
class Round:
    number: int
    kill: Kill
    runs_before: frozenset[str] = frozenset()  # flow runs of earlier rounds
    victim: str = ""
    victim_runs: tuple[str, ...] = ()  # the shard runs that died with the victim
    killed_at: float = 0.0  # wall clock
    kill_after: float = 0.0  # seconds into the round
    seconds: float = 0.0


def wait_for_the_moment(
    emulator: Any, kill: Kill, parent: subprocess.Popen[str], workers: Workers, api_url: str
) -> dict[str, list[dict[str, Any]]]:
    """Once the round has made ``kill.after_creates`` jobs: the workers worth killing, with their shard runs.

    The parent takes blocks of rows at once, so the first creates may come before any shard
    started; a worker is worth killing once one of its shards has run for a few seconds
    (it has taken blocks, and its rows are paid for and rendering).
    """
    deadline = time.monotonic() + 180
    while True:
        assert parent.poll() is None, f"the parent exited before the kill: {parent.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, (
            f"no moment to kill {kill.target} came (creates {emulator.state.jobs_created})"
        )
        if emulator.state.jobs_created >= kill.after_creates:
            if kill.target != "worker":
                return {}
            now = time.time()
            busy = {
                name: runs
                for name, runs in workers.busy(api_url).items()
                if any(
                    run["state_type"] == "RUNNING"
                    and now - datetime.fromisoformat(run["state"]["timestamp"]).timestamp() >= RUNNING_FOR
                    for run in runs
                )
            }
            if busy:
                return busy
        time.sleep(0.25)


def all_runs(api_url: str) -> list[dict[str, Any]]:
    return prefect_api("POST", "/flow_runs/filter", json={"limit": 200}, api_url=api_url)  # type: ignore[no-any-return]


def run_round(
    env: dict[str, str], workers: Workers, emulator: Any, s3: Any, bucket: str, number: int, kill: Kill
) -> tuple[Round, list[dict[str, Any]], str]:
    """One batch with its kill; the rows the (last) parent reported and the output prefix."""
    emulator.state.reset()  # every count below is this round's
    emulator.state.config.render_seconds = 0.5
    tag = f"round {number} {uuid.uuid4().hex[:6]}"
    manifest = put_manifest(
        s3, bucket, f"manifests/chaos-{number}.jsonl", [f"chaos {tag} row {n}" for n in range(ROWS)]
    )
    prefix = f"chaos/{number}"
    options = {"dead_after_seconds": DEAD_AFTER_SECONDS, "timeout_seconds": 420}
    record = Round(number, kill, frozenset(run["id"] for run in all_runs(env["PREFECT_API_URL"])))
    start = time.monotonic()
    parent = start_parent(env, manifest, f"s3://{bucket}/{prefix}", SHARDS, **options)
    try:
        busy = wait_for_the_moment(emulator, kill, parent, workers, env["PREFECT_API_URL"])
        record.killed_at, record.kill_after = time.time(), time.monotonic() - start
        if kill.target == "worker":
            record.victim = sorted(busy)[int(kill.pick * len(busy))]
            record.victim_runs = tuple(run["id"] for run in busy[record.victim])
            workers.kill(record.victim)
            workers.start()  # the replacement
        else:
            stop(parent, signal.SIGKILL)
            parent = start_parent(env, manifest, f"s3://{bucket}/{prefix}", SHARDS, **options)
        rows = finish(parent)
    finally:
        stop(parent, signal.SIGKILL)
    record.seconds = time.monotonic() - start
    return record, rows, prefix


def check_round(  # type: ignore[no-untyped-def]
    env: dict[str, str], emulator, s3, bucket: str, record: Round, rows: list[dict[str, Any]], prefix: str
) -> dict[str, Any]:
    """The round's invariants, asserted; the counts, returned for the printout."""
    api_url = env["PREFECT_API_URL"]
    delivered = [row for row in rows if row["status"] == "delivered"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
    videos = {f"s3://{bucket}/{item['Key']}" for item in listed if item["Key"].endswith(".mp4")}
    creates = emulator.state.count("create")
    assert [row["row"] for row in rows] == list(range(1, ROWS + 1)), rows
    assert len(delivered) == ROWS, [row for row in rows if row["status"] != "delivered"]
    assert {row["uri"] for row in rows} == videos and len(videos) == ROWS
    assert creates == ROWS and emulator.state.jobs_created == ROWS, (creates, emulator.state.jobs_created)

    # A dead parent's own run stays Running until the zombie automation marks it; a dead
    # holder's render slots come back when their leases run out. Both are waited for at once.
    start, cleared, freed = time.monotonic(), None, None
    while cleared is None or freed is None:
        if cleared is None and not flow_runs(api_url, ["RUNNING", "PENDING"]):
            cleared = time.monotonic() - start
        if freed is None and slots_held(api_url) == 0:
            freed = time.monotonic() - start
        elapsed = time.monotonic() - start
        assert cleared is not None or elapsed < ZOMBIE_WITHIN + 60, flow_runs(api_url, ["RUNNING", "PENDING"])
        assert freed is not None or elapsed < LEASE_SECONDS + 60, f"{slots_held(api_url)} render slots still held"
        time.sleep(1.0)

    # The render limit held throughout, dead holders included (their slots stay taken until
    # their leases run out, and their jobs are adopted long before).
    peak = peak_jobs_in_flight(emulator)
    assert peak <= RENDER_LIMIT, peak
    runs = [run for run in all_runs(api_url) if run["id"] not in record.runs_before]
    crashed = [run for run in runs if run["state_type"] == "CRASHED"]
    by_parent = [run for run in crashed if PARENT_MARK in (run["state"]["message"] or "")]
    if record.kill.target == "worker":
        # Each shard that died with the worker was marked Crashed by the parent itself (or
        # had completed in the instant between being listed and the kill)...
        ends = {run["id"]: run for run in runs}
        assert all(
            ends[run_id] in by_parent or ends[run_id]["state_type"] == "COMPLETED" for run_id in record.victim_runs
        ), [ends[run_id]["state"] for run_id in record.victim_runs]
        # ...and a claim it held is over for a run on any machine (not only by its pid here).
        assert all(claim_of_run_is_over(api_url, run_id) is True for run_id in record.victim_runs)
        # Nothing else died: every run Crashed this round died with the worker (one it had
        # taken but not started yet has no process id to list), and the parent marked it.
        assert by_parent == crashed
    else:
        # Only the dead parent's own run, marked by the zombie automation; its shards lived on.
        assert [run["parent_task_run_id"] for run in crashed] == [None], crashed
    noticed = [datetime.fromisoformat(run["state"]["timestamp"]).timestamp() - record.killed_at for run in crashed]
    return {
        "rows delivered": len(delivered),
        "distinct objects": len(videos),
        "creates": creates,
        "jobs": emulator.state.jobs_created,
        "flow runs Running": len(flow_runs(api_url, ["RUNNING", "PENDING"])),
        "slots held": slots_held(api_url),
        "crashed": len(crashed),
        "crashed by the parent": len(by_parent),
        "marked after the kill, s": sorted(round(seconds) for seconds in noticed),
        "batch s": round(record.seconds),
        "Running cleared after it, s": round(cleared),
        "slots back after it, s": round(freed),
        "how": {how: [row["how"] for row in rows].count(how) for how in sorted({row["how"] for row in rows})},
        "peak jobs rendering": peak,
    }


def test_kills_on_a_seeded_schedule_never_lose_a_row_or_pay_twice(  # type: ignore[no-untyped-def]
    chaos_server: dict[str, str], emulator, s3, bucket: str, tmp_path: Path
) -> None:
    plan = schedule(SEED)
    print(f"\nchaos seed {SEED}: " + "; ".join(f"round {n}: {k}" for n, k in enumerate(plan, 1)), flush=True)
    workers = Workers(chaos_server)
    began = time.monotonic()
    try:
        for number, kill in enumerate(plan, 1):
            if kill.target == "parent":
                with ZombieAutomation(chaos_server, tmp_path):
                    record, rows, prefix = run_round(chaos_server, workers, emulator, s3, bucket, number, kill)
                    counts = check_round(chaos_server, emulator, s3, bucket, record, rows, prefix)
            else:
                record, rows, prefix = run_round(chaos_server, workers, emulator, s3, bucket, number, kill)
                counts = check_round(chaos_server, emulator, s3, bucket, record, rows, prefix)
            killed = (
                f"worker {record.victim} ({len(record.victim_runs)} shard run(s))"
                if kill.target == "worker"
                else "the parent"
            )
            print(
                f"round {number}: killed {killed} after {kill.after_creates} creates "
                f"({record.kill_after:.0f} s in): {json.dumps(counts)}",
                flush=True,
            )
    finally:
        workers.stop_all()
    print(f"chaos: 4 rounds in {time.monotonic() - began:.0f} s", flush=True)
