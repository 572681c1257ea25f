"""Claims: of runs racing for one request, exactly one pays; the others follow its job.

Against the emulator and moto S3 (which, like S3 and MinIO, answers a second
``put_object(IfNoneMatch="*")`` of one key with ``PreconditionFailed``), through the real
SDK, boto3, the batch flow and the CLI as separate processes started at the same instant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sora_tasks.core.jobs import pipeline
from sora_tasks.core.storage import claims as claims_module
from sora_tasks.core.storage.claims import Claim, ClaimOwner, Claims
from sora_tasks.core.storage.receipts import Receipt, Receipts
from sora_tasks.flows.batch import generate_videos

from .apis import api_for
from .media import probe_mp4


def manifest_of(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_two_rows_of_one_request_pay_once_and_both_are_delivered(emulator: Any, tmp_path: Path) -> None:
    prompt = f"one request, two rows ({tmp_path.name})"
    manifest = manifest_of(tmp_path, [{"prompt": prompt, "output": "a.mp4"}, {"prompt": prompt, "output": "b.mp4"}])
    rows = generate_videos(manifest, output_prefix=str(tmp_path / "out"), api=api_for(emulator, poll_interval=0.1))
    assert [row["status"] for row in rows] == ["delivered", "delivered"]
    assert emulator.state.jobs_created == 1
    assert rows[0]["video_id"] == rows[1]["video_id"]
    assert sorted(row["how"] for row in rows) == ["created", "resumed"]  # one paid, one followed
    first, second = (tmp_path / "out" / "a.mp4").read_bytes(), (tmp_path / "out" / "b.mp4").read_bytes()
    assert first == second and probe_mp4(first).codec == "h264"


def test_ambiguous_creates_adopt_no_job_twice_and_leave_none_unrecorded(emulator: Any, tmp_path: Path) -> None:
    # Each create is committed, then answered 500: a row finds its job in the list and adopts it.
    emulator.faults.inject("create_then_500", endpoint="create", count=4)
    base = f"ambiguous ({tmp_path.name})"
    manifest = manifest_of(
        tmp_path,
        [
            {"prompt": base, "output": "same-1.mp4"},
            {"prompt": base, "output": "same-2.mp4"},
            {"prompt": base + " other", "output": "other.mp4"},
        ],
    )
    rows = generate_videos(manifest, output_prefix=str(tmp_path / "out"), api=api_for(emulator, poll_interval=0.1))
    assert [row["status"] for row in rows] == ["delivered"] * 3
    made = {job.id for job in emulator.state.listing()}
    delivered = {row["video_id"] for row in rows}
    # Two requests, two jobs: each adopted by its own request only, none paid and left behind.
    assert emulator.state.jobs_created == 2 and delivered == made


def run_together(commands: list[tuple[list[str], dict[str, str]]], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Start every command, then let them all go at once (each waits for a file to appear)."""
    go = cwd / "go"
    processes = [
        subprocess.Popen(command, cwd=cwd, env={**env, "SORA_TEST_GO": str(go)}, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for command, env in commands
    ]  # fmt: skip
    time.sleep(3.0)  # every interpreter started and waiting
    go.write_text("go")
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


WAIT_THEN = "import os, pathlib, time\nwhile not pathlib.Path(os.environ['SORA_TEST_GO']).exists(): time.sleep(0.005)\n"


def test_two_cli_calls_at_the_same_instant_for_one_s3_output_pay_once(
    emulator: Any, s3: Any, bucket: str, tmp_path: Path
) -> None:
    output = f"s3://{bucket}/race/one.mp4"
    script = WAIT_THEN + "from sora_tasks.cli import main\nraise SystemExit(main())\n"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(OPENAI_BASE_URL=emulator.base_url)
    argv = ["--local", "--quiet", "--no-previews", "--prompt", f"a race ({tmp_path.name})", "--output", output]
    commands = [
        ([sys.executable, "-c", script, *argv], {**env, "SORA_HOME": str(tmp_path / f"home-{n}")}) for n in (1, 2)
    ]
    done = run_together(commands, tmp_path)
    assert [result.returncode for result in done] == [0, 0], [result.stderr for result in done]
    assert [result.stdout.strip() for result in done] == [output, output]
    assert emulator.state.jobs_created == 1
    body = s3.get_object(Bucket=bucket, Key="race/one.mp4")["Body"].read()
    assert probe_mp4(body).codec == "h264"


def test_two_batches_of_one_manifest_at_the_same_instant_pay_for_each_row_once(
    emulator: Any, s3: Any, bucket: str, tmp_path: Path
) -> None:
    rows = [{"prompt": f"batch race {n} ({tmp_path.name})", "output": f"row-{n}.mp4"} for n in range(8)]
    s3.put_object(Bucket=bucket, Key="race/rows.jsonl", Body="".join(json.dumps(row) + "\n" for row in rows))
    script = WAIT_THEN + textwrap.dedent(
        f"""
        from sora_tasks.blocks import VideosApi
        from sora_tasks.flows.batch import generate_videos
        rows = generate_videos(
            "s3://{bucket}/race/rows.jsonl", output_prefix="s3://{bucket}/race/out",
            api=VideosApi(base_url="{emulator.base_url}", poll_interval=0.1), previews=False,
        )
        print(sorted(row["status"] for row in rows))
        """
    )
    from prefect.settings import PREFECT_API_URL

    commands = []
    for n in (1, 2):
        home = tempfile.mkdtemp(prefix=f"prefect-home-{n}-")  # a fresh PREFECT_HOME each: no shared cache
        env = {**os.environ, "PREFECT_HOME": home, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        commands.append(([sys.executable, "-c", script], env))
    done = run_together(commands, tmp_path)
    assert [result.returncode for result in done] == [0, 0], [result.stderr[-4000:] for result in done]
    assert emulator.state.jobs_created == 8
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="race/out/")["Contents"]]
    assert sorted(keys) == sorted(f"race/out/row-{n}.mp4" for n in range(8))
    for key in keys:
        assert probe_mp4(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).codec == "h264"


def test_a_claim_whose_owner_died_is_taken_over_and_its_job_adopted(emulator: Any, tmp_path: Path) -> None:
    settings = api_for(emulator, poll_interval=0.1).settings()
    client = settings.new_client()
    request = pipeline.VideoRequest(prompt=f"orphaned ({tmp_path.name})", model="sora-2", seconds="4", size="1280x720")
    receipts = Receipts(str(tmp_path / "receipts"))
    plan = pipeline.plan_job(client, request)
    # A process on this machine claimed the request, created the job, and died before its receipt.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = ClaimOwner(claims_module.socket.gethostname(), int(dead.stdout), "1", None, "dead-process")
    Claims(receipts.location)._store.put_new(plan.key, Claim(plan.key, 0, owner, time.time() - 5).to_json())
    made = client.create(request)
    delivered = pipeline.produce(
        client, request, str(tmp_path / "out.mp4"), receipts=receipts, max_wait=60, poll_interval=0.1
    )
    assert delivered.video_id == made.id and emulator.state.jobs_created == 1  # adopted, not paid again
    assert receipts.find(plan.key) is not None


def test_a_live_claim_is_followed_once_its_holder_records_the_job(emulator: Any, tmp_path: Path) -> None:
    settings = api_for(emulator, poll_interval=0.1).settings()
    client = settings.new_client()
    request = pipeline.VideoRequest(prompt=f"held ({tmp_path.name})", model="sora-2", seconds="4", size="1280x720")
    receipts = Receipts(str(tmp_path / "receipts"))
    plan = pipeline.plan_job(client, request)
    # Held by a live process elsewhere (this test's parent stands in for it).
    parent = os.getppid()
    owner = ClaimOwner(claims_module.socket.gethostname(), parent, claims_module._process_started(parent), None, "x")
    Claims(receipts.location)._store.put_new(plan.key, Claim(plan.key, 0, owner, time.time()).to_json())

    def holder_pays() -> None:
        time.sleep(1.0)
        made = client.create(request)
        receipts.record(Receipt(plan.key, made.id, client.base_url, "sora-2", "4", "1280x720"))

    holder = threading.Thread(target=holder_pays)
    holder.start()
    delivered = pipeline.produce(
        settings.new_client(), request, str(tmp_path / "out.mp4"), receipts=receipts, max_wait=60, poll_interval=0.1
    )
    holder.join()
    assert emulator.state.jobs_created == 1 and delivered.how == "resumed"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_exactly_one_of_many_racing_writers_wins_a_claim(where: str, tmp_path: Path, s3: Any, bucket: str) -> None:
    location = str(tmp_path / "receipts") if where == "local" else f"s3://{bucket}/claims-race/receipts"
    stores = [Claims(location, s3 if where == "s3" else None) for _ in range(8)]
    start = threading.Barrier(len(stores))
    won: list[bool] = []

    def race(claims: Claims) -> None:
        start.wait()
        claim = Claim("k" * 64, 0, ClaimOwner("elsewhere", 1, None, None, os.urandom(4).hex()), time.time())
        won.append(claims._store.put_new(claim.name, claim.to_json()))

    threads = [threading.Thread(target=race, args=(claims,)) for claims in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]
