"""The VideosApi block on a real `prefect server start`: registered, saved with a key, driving every flow.

The emulator accepts only the sentinel key, and OPENAI_API_KEY is unset in the processes
that run the flows and the CLI, so every job below proves the key came from the block.
Afterwards the server's database file and its API answers are searched for the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .conftest import SENTINEL_API_KEY
from .media import probe_mp4
from .prefect_api import prefect_api

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parent.parent

# Runs in a process of its own: the flows talk to the real server named by PREFECT_API_URL.
RUN_EVERY_FLOW = """
import json, sys, time
from pydantic import SecretStr
from prefect_aws import AwsCredentials, S3Bucket
from sora_tasks import BatchFailedError
from sora_tasks.blocks import VideosApi
from sora_tasks.core.spec import VideoSpec
from sora_tasks.flows.batch import generate_videos
from sora_tasks.flows.deferred import collect_pending
from sora_tasks.flows.generate import generate_video
from sora_tasks.flows.manual import collect_video, submit_video, video_status

base_url, key, bucket, work = sys.argv[1:5]
api = VideosApi(base_url=base_url, api_key=SecretStr(key), poll_interval=0.1)
api.save("sora-test", overwrite=True)
S3Bucket(bucket_name=bucket, bucket_folder="blocks", credentials=AwsCredentials()).save("videos-test", overwrite=True)
done = {}
for how, given in (("object", api), ("name", "sora-test")):
    done[how + "-sync"] = generate_video(VideoSpec(prompt="block " + how, duration=8), output=work + "/" + how + ".mp4", api=given).uri
    submitted = submit_video("async " + how, output=how + "/{video_id}.mp4", api=given, destination="videos-test",
                             ledger=work + "/ledger-" + how)
    while video_status(submitted.video_id, api=given)["status"] != "completed":
        time.sleep(0.2)
    rows = collect_pending(ledger=work + "/ledger-" + how, api=given)
    done[how + "-pending"] = [row["outcome"] for row in rows]
    done[how + "-collect"] = collect_video(submitted.video_id, output=how + "/again.mp4", api=given,
                                           destination="videos-test").uri
    outcomes = generate_videos(manifest="manifests/three.jsonl", output_prefix="batch-" + how, api=given,
                               destination="videos-test")
    done[how + "-batch"] = [row["uri"] for row in outcomes]
print(json.dumps(done))
"""


def without_key(settings: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **settings}
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return env


def test_the_block_type_registers_with_its_description_and_example(prefect_server_env: dict[str, str]) -> None:
    done = subprocess.run(
        [str(BIN / "prefect"), "block", "register", "-m", "sora_tasks.blocks"],
        env={**os.environ, **prefect_server_env},
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    block_type = prefect_api("GET", "/block_types/slug/videos-api", api_url=prefect_server_env["PREFECT_API_URL"])
    assert block_type["name"] == "Videos API" and "Sora" in block_type["description"]
    assert "VideosApi(" in block_type["code_example"]
    schema = prefect_api(
        "POST",
        "/block_schemas/filter",
        json={"block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}},
        api_url=prefect_server_env["PREFECT_API_URL"],
    )[0]
    assert schema["fields"]["secret_fields"] == ["api_key"]  # stored encrypted, never shown
    assert {"format": "password", "type": "string", "writeOnly": True} in schema["fields"]["properties"]["api_key"][
        "anyOf"
    ]
    assert {"base_url", "provider", "model", "poll_interval", "max_wait", "rate_limit_name"} <= set(
        schema["fields"]["properties"]
    )


def test_a_saved_block_drives_every_flow_and_the_cli_and_its_key_is_never_recorded(  # type: ignore[no-untyped-def]
    prefect_server_env: dict[str, str], emulator, s3, bucket: str, tmp_path: Path
) -> None:
    emulator.state.config.api_key = SENTINEL_API_KEY  # any other key is refused
    s3.put_object(
        Bucket=bucket,
        Key="blocks/manifests/three.jsonl",
        Body="".join(json.dumps({"prompt": f"batch row {n}"}) + "\n" for n in range(3)).encode(),
    )
    storage = tmp_path / "results"
    env = without_key({**prefect_server_env, "PREFECT_LOCAL_STORAGE_PATH": str(storage)})
    flows = subprocess.run(
        [sys.executable, "-c", RUN_EVERY_FLOW, emulator.base_url, SENTINEL_API_KEY, bucket, str(tmp_path)],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert flows.returncode == 0, flows.stderr[-4000:]
    done: dict[str, Any] = json.loads(flows.stdout.strip().splitlines()[-1])
    for how in ("object", "name"):
        assert probe_mp4(Path(done[f"{how}-sync"])).seconds == 8.0
        assert done[f"{how}-pending"] == ["delivered"]
        assert done[f"{how}-collect"] == f"s3://{bucket}/blocks/{how}/again.mp4"
        assert all(uri.startswith(f"s3://{bucket}/blocks/batch-{how}/") for uri in done[f"{how}-batch"])
        assert len(done[f"{how}-batch"]) == 3
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="blocks/")["Contents"]]
    swept = [key for key in keys if key.startswith("blocks/object/video_")]
    # The sweep delivered under the block's folder: the video, its previews beside it.
    assert sum(key.endswith(".mp4") for key in swept) == 1 and len(swept) == 3, swept

    cli = subprocess.run(
        [sys.executable, "-m", "sora_tasks.cli", "--api-block", "sora-test", "--prompt", "from the shell",
         "--output", str(tmp_path / "cli.mp4")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert probe_mp4(tmp_path / "cli.mp4").frames == 96
    # sync and async per way of passing the block, the batch once (run by name, its rows follow the
    # jobs the first run paid for: the same requests, never paid twice), and the CLI.
    assert emulator.state.jobs_created == 2 * (1 + 1) + 3 + 1

    api_url = prefect_server_env["PREFECT_API_URL"]
    answers: list[Any] = []
    for path in (
        "/flow_runs/filter",
        "/task_runs/filter",
        "/logs/filter",
        "/artifacts/filter",
        "/block_documents/filter",
    ):
        answers.append(prefect_api("POST", path, json={"limit": 200}, api_url=api_url))
    answers.append(prefect_api("POST", "/events/filter", json={"limit": 50}, api_url=api_url))
    recorded = json.dumps(answers)
    flow_runs = answers[0]
    assert any(run["parameters"].get("api") == "sora-test" for run in flow_runs)  # by name: the name is recorded
    assert any(isinstance(run["parameters"].get("api"), dict) for run in flow_runs)  # by object: fields, key masked
    assert len(answers[1]) > 10  # task runs, with their cache keys (idempotency is in receipts, not caches)
    database = b"".join(path.read_bytes() for path in Path(prefect_server_env["PREFECT_HOME"]).rglob("*.db*"))
    results = "".join(path.read_text(errors="replace") for path in storage.rglob("*") if path.is_file())
    assert len(recorded) > 20_000 and len(database) > 100_000  # we really looked at something
    for text in (recorded, results, flows.stdout, flows.stderr, cli.stdout, cli.stderr):
        assert SENTINEL_API_KEY not in text
    assert SENTINEL_API_KEY.encode() not in database  # block documents are stored encrypted
