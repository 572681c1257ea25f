"""One measurement in a fresh process, so its wall time, CPU time and peak RSS are its own.

    python bench/worker.py KIND '{"json": "arguments"}'   # prints one JSON line

Run by bench/run.py with PREFECT_API_URL, OPENAI_* and AWS_* pointing at its servers.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def manifest_of(n: int, tag: str, directory: str) -> str:
    path = Path(directory) / "manifest.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{tag} {i}"}) + "\n" for i in range(n)))
    return str(path)


def batch_flow(args: dict[str, Any]) -> dict[str, Any]:
    from sora_tasks import BatchFailedError
    from sora_tasks.blocks import VideosApi
    from sora_tasks.flows.batch import generate_videos

    marks = trace_batch() if args.get("trace") else None
    profiler = start_profiler() if args.get("profile") else None
    with tempfile.TemporaryDirectory() as work:
        manifest = manifest_of(args["n"], args["tag"], work)
        try:
            rows = generate_videos(
                manifest=manifest,
                output_prefix=f"s3://{args['bucket']}/{args['tag']}",
                api=VideosApi(base_url=args["base_url"], poll_interval=0.25),
                max_in_flight=args["c"],
                previews=False,  # like for like: the SDK baseline downloads the MP4 only
            )
        except BatchFailedError as error:
            raise SystemExit(f"batch flow failed: {error}") from error
    if profiler is not None:
        profiler.stop()
        Path(args["profile"]).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    check_created(rows, args["n"])
    return {"marks": marks} if marks is not None else {}


def start_profiler() -> Any:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    return profiler


def trace_batch() -> dict[str, dict[str, float]]:
    """Wrap the steps of a batch run: when each was first entered and left, how often, for how long in all.

    Diagnostics for ``--profile``: where the time before the first create goes. Each
    function is replaced in the module that calls it; the run's figures are not the
    measured ones.
    """
    import sora_tasks.core.jobs.pipeline
    import sora_tasks.flows.batch

    marks: dict[str, dict[str, float]] = {}
    lock = threading.Lock()

    def wrap(module: Any, name: str) -> None:
        original = getattr(module, name)

        def traced(*args: Any, **kwargs: Any) -> Any:
            entered = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                left = time.time()
                with lock:
                    mark = marks.setdefault(name, {"first_in": entered, "first_out": left, "calls": 0, "total": 0.0})
                    mark["calls"] += 1
                    mark["total"] += left - entered

        setattr(module, name, traced)

    for name in (
        "load_api",
        "load_manifest",
        "check_bucket",
        "report_estimate",
        "run_rows",
        "track_batch",
        "listings",
        "produce",
    ):
        wrap(sora_tasks.flows.batch, name)
    for name in ("_delivered_at", "_submit", "wait", "deliver"):
        wrap(sora_tasks.core.jobs.pipeline, name)
    return marks


def check_created(rows: list[dict[str, Any]], n: int) -> None:
    """Every row made fresh: a row found already delivered would make the run look faster than it is."""
    made = sum(row.get("status") == "delivered" and row.get("how") == "created" for row in rows)
    if len(rows) != n or made != n:
        hows = sorted({str(row.get("how") or row.get("status")) for row in rows})
        raise SystemExit(f"expected {n} rows created fresh, got {made} of {len(rows)} ({', '.join(hows)})")


def batch_sdk(args: dict[str, Any]) -> None:
    """The plain-SDK way: a thread pool of create_and_poll + streamed download + boto3 upload."""
    import boto3
    from openai import OpenAI

    client = OpenAI(base_url=args["base_url"], max_retries=3)
    s3 = boto3.client("s3")

    def one(prompt: str, directory: str) -> None:
        video = client.videos.create_and_poll(prompt=prompt, model="sora-2", seconds="4", size="1280x720")
        if video.status != "completed":
            raise RuntimeError(f"{video.id} ended {video.status}")
        path = Path(directory) / f"{video.id}.mp4"
        with client.videos.with_streaming_response.download_content(video.id) as response:
            response.stream_to_file(path)
        s3.upload_file(str(path), args["bucket"], f"{args['tag']}/{video.id}.mp4")
        path.unlink()

    with tempfile.TemporaryDirectory() as work, concurrent.futures.ThreadPoolExecutor(args["c"]) as pool:
        list(pool.map(lambda i: one(f"{args['tag']} {i}", work), range(args["n"])))


def spread_parent(args: dict[str, Any]) -> None:
    """The parent of a spread batch (with its shards, flow runs of the shard deployment on other processes).

    ``shards`` 0: the same batch in this one process, for comparison.
    """
    from sora_tasks import BatchFailedError
    from sora_tasks.flows.batch import generate_videos
    from sora_tasks.flows.spread import Spread

    try:
        rows = generate_videos(
            manifest=args["manifest"],
            output_prefix=args["output_prefix"],
            api=args["api"],  # a saved block, by name: the shards load it on their workers
            max_in_flight=args["c"],
            spread=Spread(shards=args["shards"], work_pool=args["work_pool"]) if args["shards"] else None,
            previews=False,
        )
    except BatchFailedError as error:
        raise SystemExit(f"spread batch failed: {error}") from error
    check_created(rows, args["n"])


def big_flow(args: dict[str, Any]) -> None:
    """The sync flow delivering one (padded, large) video to S3."""
    from sora_tasks.blocks import VideosApi
    from sora_tasks.flows.generate import generate_video

    generate_video(
        "a large video",
        api=VideosApi(base_url=args["base_url"]),
        output=f"s3://{args['bucket']}/big-flow.mp4",
        previews=False,
    )


def big_bytes(args: dict[str, Any]) -> None:
    """What the flow avoids: the whole video as one bytes object, then put_object."""
    import boto3
    from openai import OpenAI

    client = OpenAI(base_url=args["base_url"])
    video = client.videos.create_and_poll(prompt="a large video", model="sora-2", seconds="4", size="1280x720")
    data = client.videos.download_content(video.id).content
    boto3.client("s3").put_object(Bucket=args["bucket"], Key="big-bytes.mp4", Body=data)


def overhead(args: dict[str, Any]) -> None:
    """Per-video time of the sync flow and of the bare SDK at T=0; profiles the flow."""
    from openai import OpenAI
    from pyinstrument import Profiler

    from sora_tasks.blocks import VideosApi
    from sora_tasks.flows.generate import generate_video

    videos, base_url = args["videos"], args["base_url"]
    client = OpenAI(base_url=base_url)
    api = VideosApi(base_url=base_url, poll_interval=0.02)
    with tempfile.TemporaryDirectory() as work:
        client.videos.create_and_poll(prompt="warm-up", poll_interval_ms=20)
        # previews=False: like for like, the SDK loop below downloads the MP4 only.
        generate_video("warm-up", api=api, output=f"{work}/w.mp4", previews=False)
        started = time.perf_counter()
        for i in range(videos):
            video = client.videos.create_and_poll(prompt=f"sdk {i}", poll_interval_ms=20)
            with client.videos.with_streaming_response.download_content(video.id) as response:
                response.stream_to_file(Path(work, f"{i}.mp4"))
        sdk = (time.perf_counter() - started) / videos
        profiler = Profiler(interval=0.001)
        started = time.perf_counter()
        with profiler:
            for i in range(videos):
                generate_video(f"flow {i}", api=api, output=f"{work}/f{i}.mp4", previews=False)
        flow = (time.perf_counter() - started) / videos
    Path(args["profile"]).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    session = profiler.last_session
    if session is None:
        raise SystemExit("the profiler recorded no session")
    print(json.dumps({"sdk": sdk, "flow": flow, "profile_cpu": session.cpu_time / videos}))


# Imported before the "before" RSS figure, so the peak shows what the work itself adds.
IMPORTS = {
    "batch-flow": "sora_tasks.flows.batch",
    "batch-sdk": "openai",
    "big-flow": "sora_tasks.flows.generate",
    "big-bytes": "openai",
    "spread-parent": "sora_tasks.flows.batch",
}
KINDS: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "batch-flow": batch_flow,
    "batch-sdk": batch_sdk,
    "big-flow": big_flow,
    "big-bytes": big_bytes,
    "spread-parent": spread_parent,
}


def main() -> None:
    kind, args = sys.argv[1], json.loads(sys.argv[2])
    if kind == "overhead":
        overhead(args)
        return
    importlib.import_module(IMPORTS[kind])
    import boto3  # noqa: F401  (every kind uploads)

    idle = current_rss_mb()
    started_at, started_wall, started_cpu = time.time(), time.perf_counter(), time.process_time()
    extra = KINDS[kind](args) or {}
    wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    figures = {"wall": wall, "cpu": cpu, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": idle}
    print(json.dumps({**figures, "started_at": started_at, **extra}))


if __name__ == "__main__":
    main()
