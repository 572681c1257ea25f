"""Batch rows on a real `distributed` cluster through prefect-dask's DaskTaskRunner: the same outcomes."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from .media import sha256


def test_batch_rows_run_on_dask_worker_processes(emulator, s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    from distributed import Client, LocalCluster, get_task_stream
    from prefect.settings import PREFECT_API_URL
    from prefect_dask import DaskTaskRunner

    from sora_tasks.blocks import VideosApi
    from sora_tasks.flows.batch import generate_videos

    tag = uuid.uuid4().hex[:6]
    rows = [{"prompt": f"dask row {n} {tag}"} for n in range(6)]
    s3.put_object(Bucket=bucket, Key="dask/m.jsonl", Body="\n".join(map(json.dumps, rows)).encode())
    # The cluster's worker processes report their task runs to the same Prefect server.
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    try:
        with (
            LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
            get_task_stream(client) as stream,
        ):
            flow = generate_videos.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
            outcomes: list[dict[str, Any]] = flow(
                manifest=f"s3://{bucket}/dask/m.jsonl",
                output_prefix=f"s3://{bucket}/dask/out",
                api=VideosApi(base_url=emulator.base_url, poll_interval=0.1),
                max_in_flight=2,
            )
        workers = {task["worker"] for task in stream.data}  # collected as the stream's block ends
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
    assert [o["status"] for o in outcomes] == ["delivered"] * 6
    assert emulator.state.count("create") == 6 and emulator.state.jobs_created == 6
    assert len(workers) == 2  # rows really ran in both Dask worker processes
    for outcome in outcomes:
        body = s3.get_object(Bucket=bucket, Key=outcome["uri"].removeprefix(f"s3://{bucket}/"))["Body"].read()
        assert sha256(body) == sha256(emulator.state.get(outcome["video_id"]).render.result().video.read_bytes())
