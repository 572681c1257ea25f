"""collect-pending draining a ledger of finished jobs, in a fresh process; prints one JSON line.

    python bench/sweep_worker.py '{"base_url": ..., "bucket": ..., "n": 1000, "workers": 16, "tag": ...}'

Run by bench/run.py (``--parts sweep``) with PREFECT_API_URL, OPENAI_* and AWS_* pointing
at its servers. The jobs are made and the ledger written before the clock starts; the
clock runs over one ``collect_pending`` call, flow-run start and end included.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Logged as a deployment logs: one INFO line per record reaches the Prefect API.
os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def finished_jobs(base_url: str, n: int) -> list[str]:
    """``n`` jobs on an emulator started with --render-seconds 0 --reuse-renders: done as soon as made."""
    import httpx

    body = {"model": "sora-2", "seconds": "4", "size": "1280x720"}
    headers = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'sk-bench')}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client, ThreadPoolExecutor(16) as pool:

        def create(i: int) -> str:
            return str(client.post("/videos", json={**body, "prompt": f"sweep {i}"}).raise_for_status().json()["id"])

        ids = list(pool.map(create, range(n)))
        deadline = time.monotonic() + 120
        while client.get(f"/videos/{ids[-1]}").json()["status"] != "completed":
            if time.monotonic() > deadline:
                raise RuntimeError("the emulator's jobs did not finish")
            time.sleep(0.05)
    return ids


def main() -> None:
    import boto3

    from sora_tasks.blocks import VideosApi
    from sora_tasks.core.storage.ledger import Ledger, PendingVideo
    from sora_tasks.flows.deferred import collect_pending

    args = json.loads(sys.argv[1])
    base_url, bucket, n, tag = args["base_url"], args["bucket"], args["n"], args["tag"]
    ids = finished_jobs(base_url, n)
    book = Ledger(f"s3://{bucket}/{tag}/ledger")  # shared by every worker in a real deployment
    output = f"s3://{bucket}/{tag}/videos/{{video_id}}.mp4"
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda video_id: book.add(PendingVideo(video_id, output, base_url=base_url)), ids))

    started_wall, started_cpu = time.perf_counter(), time.process_time()
    # Videos only, as the drain rate is quoted (previews are two more downloads a video).
    # The sweep calls its own server: records made for any other are skipped (docs/security.md).
    api = VideosApi(base_url=base_url)
    rows = collect_pending(ledger=book.location, api=api, workers=args["workers"], previews=False)
    wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu

    delivered = sum(row["outcome"] == "delivered" for row in rows)
    listing = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{tag}/videos/")
    stored = sum(len(page.get("Contents", [])) for page in listing)
    left = sum(1 for _ in book.video_ids())
    if delivered != n or stored != n or left:
        raise SystemExit(f"expected {n} delivered, stored and none left; got {delivered}, {stored}, {left} left")
    print(json.dumps({"wall": wall, "cpu": cpu, "n": n, "rate": n / wall}))


if __name__ == "__main__":
    main()
