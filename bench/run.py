"""Benchmarks: what is ours around the provider's render time, measured against the emulator.

    make bench   # everything; writes the table into docs/benchmarks.md, the plot and the profile
    python bench/run.py --sizes 200 --parts batch --repeats 1   # a one-minute look
    python bench/run.py --parts cli --repeats 5   # `sora-video` against a plain SDK script, two minutes
    python bench/run.py --parts sweep --repeats 1   # collect-pending draining 1,000 finished jobs
    python bench/run.py --parts spread   # 200 rows in one process, over 1, 2, 4 workers, and at T=30 s: ~17 min
    python bench/run.py --parts quality --repeats 5   # the quality check of a 12 s 1792x1024 video

Every measurement runs in its own process (bench/worker.py) against a `sora-emulator`
process and a moto S3 server process, with a Prefect server started here (the
`spread` part starts a `prefect server start` process and `prefect worker start`
processes of its own); figures are medians of --repeats runs with their min-max spread.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import quality_check  # bench/ is not a package
import servers

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
BUCKET = "bench"
PARTS = ("batch", "memory", "overhead", "preprocess", "cli", "sweep", "spread", "quality")


def spread(values: list[float], unit: str = "s", digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f} {unit}"
    return f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def run_worker(kind: str, args: dict[str, object], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "worker.py"), kind, json.dumps(args)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass
class BatchFigures:
    n: int
    flow: list[dict[str, float]] = field(default_factory=list)
    sdk: list[dict[str, float]] = field(default_factory=list)
    requests: list[dict[str, float]] = field(default_factory=list)

    def walls(self, kind: str) -> list[float]:
        return [run["wall"] for run in getattr(self, kind)]


def bench_batch(n: int, c: int, render: float, repeats: int, env: dict[str, str], work: Path) -> BatchFigures:
    figures = BatchFigures(n)
    for attempt in range(repeats):
        for kind in ("flow", "sdk"):
            log = work / f"requests-{kind}-{n}-{attempt}.jsonl"
            log.unlink(missing_ok=True)
            with servers.emulator(render, log) as base_url:
                args = {"n": n, "c": c, "base_url": base_url, "bucket": BUCKET, "tag": f"{kind}-{n}-{attempt}"}
                run = run_worker(f"batch-{kind}", args, env)
            # Where the wall time went: before the first create, between it and the
            # end of the last download, and after that until the run returned.
            first_create, last_download = servers.request_span(log)
            run["head"] = first_create - run["started_at"]
            run["tail"] = run["started_at"] + run["wall"] - last_download
            getattr(figures, kind).append(run)
            if kind == "flow":
                counts = servers.count_requests(log)
                figures.requests.append({name: counts[name] / n for name in ("create", "retrieve", "list", "content")})
        flow, sdk = figures.flow[-1], figures.sdk[-1]
        print(
            f"  N={n} run {attempt + 1}: flow {flow['wall']:.2f} s (head {flow['head']:.2f}, tail {flow['tail']:.2f}),"
            f" sdk {sdk['wall']:.2f} s (head {sdk['head']:.2f}, tail {sdk['tail']:.2f})",
            flush=True,
        )
    return figures


def warm_prefect(env: dict[str, str], work: Path) -> None:
    """One small batch, not measured, so the Prefect server has served a flow run before the clock runs.

    The first flow run on a freshly started server waits on the server's own start-up
    work (about 0.7 s more before its first create and as much after its last
    download, on 2 cores); a server in use has long done it.
    """
    with servers.emulator(0.0, work / "requests-warm-up.jsonl") as base_url:
        args = {"n": 2, "c": 2, "base_url": base_url, "bucket": BUCKET, "tag": "warm-up"}
        run = run_worker("batch-flow", args, env)
    print(f"  warm-up flow run (not measured): {run['wall']:.2f} s", flush=True)


def profile_batch(n: int, c: int, render: float, env: dict[str, str], work: Path, profiles: Path) -> None:
    """One more flow run, traced and under pyinstrument: where its time before the first create goes.

    Its figures are not in the table (the profiler and the tracing slow it down); the
    steps' first entry and exit are printed relative to the run's start and the
    profile is written to ``profiles``.
    """
    log = work / f"requests-flow-{n}-profiled.jsonl"
    log.unlink(missing_ok=True)
    profiles.mkdir(parents=True, exist_ok=True)
    profile = profiles / f"batch-flow-N{n}-profile.txt"
    with servers.emulator(render, log) as base_url:
        args = {"n": n, "c": c, "base_url": base_url, "bucket": BUCKET, "tag": f"flow-{n}-profiled"}
        run: dict[str, Any] = run_worker("batch-flow", {**args, "trace": True, "profile": str(profile)}, env)
    first_create, _ = servers.request_span(log)
    start = run["started_at"]
    head = first_create - start
    print(f"  profiled N={n}: wall {run['wall']:.2f} s, CPU {run['cpu']:.2f} s, first create at {head:.2f} s")
    for name, mark in sorted(run["marks"].items(), key=lambda item: item[1]["first_in"]):
        print(
            f"    {name:<16} first in {mark['first_in'] - start:6.3f} s, first out {mark['first_out'] - start:6.3f} s,"
            f" {mark['calls']:4d} calls, {mark['total'] / mark['calls'] * 1000:7.1f} ms each",
            flush=True,
        )
    print(f"  profile: {profile}", flush=True)


def bench_memory(size_mb: int, env: dict[str, str], work: Path) -> dict[str, dict[str, float]]:
    results = {}
    with servers.emulator(1.0, work / "requests-big.jsonl", pad_bytes=size_mb << 20) as base_url:
        for kind in ("big-flow", "big-bytes"):
            results[kind] = run_worker(kind, {"base_url": base_url, "bucket": BUCKET}, env)
            print(f"  {kind}: peak RSS {results[kind]['peak_rss_mb']:.0f} MB", flush=True)
    return results


def bench_overhead(videos: int, env: dict[str, str], work: Path, profile: Path) -> dict[str, float]:
    with servers.emulator(0.0, work / "requests-overhead.jsonl") as base_url:
        return run_worker("overhead", {"base_url": base_url, "videos": videos, "profile": str(profile)}, env)


def bench_preprocess(repeats: int) -> list[float]:
    from PIL import Image

    from sora_tasks.core import prepare_image

    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((6000, 4000)).convert("RGB").save(buffer, format="JPEG", quality=90)
    photo = buffer.getvalue()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        prepare_image(photo, "1280x720")
        times.append(time.perf_counter() - started)
    return times


def plot(batches: list[BatchFigures], c: int, render: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [batch.n for batch in batches]
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    for kind, label, marker in (("flow", "generate_videos flow", "o"), ("sdk", "plain SDK thread pool", "s")):
        medians = [statistics.median(batch.walls(kind)) for batch in batches]
        low = [m - min(batch.walls(kind)) for m, batch in zip(medians, batches, strict=True)]
        high = [max(batch.walls(kind)) - m for m, batch in zip(medians, batches, strict=True)]
        axis.errorbar(sizes, medians, yerr=[low, high], marker=marker, capsize=3, label=label)
    dense = list(range(1, max(sizes) + 1))
    axis.step(dense, [math.ceil(n / c) * render for n in dense], where="post", color="grey", label="limit ceil(N/C)·T")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel(f"batch size N (C={c} in flight, render T={render:g} s)")
    axis.set_ylabel("wall time (s)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)


def median(runs: list[dict[str, float]], name: str) -> float:
    return statistics.median(run[name] for run in runs)


# The targets for a batch beside the plain SDK in the same run.
CPU_TARGET, HEAD_TARGET = 1.3, 1.0


def batch_rows(batches: list[BatchFigures], c: int, render: float) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for batch in batches:
        limit = math.ceil(batch.n / c) * render
        flow, sdk = statistics.median(batch.walls("flow")), statistics.median(batch.walls("sdk"))
        flow_head = median(batch.flow, "head")
        flow_cpu, sdk_cpu = median(batch.flow, "cpu") / batch.n, median(batch.sdk, "cpu") / batch.n
        rows += [
            (f"batch N={batch.n}: limit ceil(N/C)*T", f"{limit:.2f} s", f"C={c}, T={render:g} s"),
            ("  generate_videos flow", spread(batch.walls("flow")), f"{flow / limit:.2f}x limit"),
            ("  plain SDK thread pool", spread(batch.walls("sdk")), f"{sdk / limit:.2f}x limit"),
            (
                "  before first create",
                f"flow {flow_head:.2f} s",
                f"SDK {median(batch.sdk, 'head'):.2f} s; target < {HEAD_TARGET:g} s: "
                f"{'met' if flow_head < HEAD_TARGET else 'NOT met'}",
            ),
            (
                "  after last download",
                f"flow {median(batch.flow, 'tail'):.2f} s",
                f"SDK {median(batch.sdk, 'tail'):.2f} s",
            ),
            (
                "  CPU per video",
                f"flow {flow_cpu * 1000:.0f} ms, SDK {sdk_cpu * 1000:.0f} ms",
                f"{flow_cpu / sdk_cpu:.2f}x SDK; target <= {CPU_TARGET:g}x SDK: "
                f"{verdict(flow_cpu / sdk_cpu, CPU_TARGET)}",
            ),
            (
                "  flow per video: wall / peak RSS",
                f"{flow / batch.n * 1000:.0f} ms / "
                f"{statistics.median(run['peak_rss_mb'] for run in batch.flow):.0f} MB",
                f"SDK {sdk / batch.n * 1000:.0f} ms / "
                f"{statistics.median(run['peak_rss_mb'] for run in batch.sdk):.0f} MB",
            ),
        ]
    poll_bound = math.ceil(render / 0.25) + 1
    per_video = {
        name: statistics.median(run.get(name, 0.0) for batch in batches for run in batch.requests)
        for name in ("create", "retrieve", "list", "content")
    }
    worst_reads = max(run["retrieve"] + run.get("list", 0.0) for batch in batches for run in batch.requests)
    rows.append(
        (
            "requests per video: create / status reads / download",
            f"{per_video['create']:.2f} / {per_video['retrieve'] + per_video['list']:.2f} / {per_video['content']:.2f}",
            f"reads: {per_video['retrieve']:.2f} retrieves + {per_video['list']:.2f} list pages (worst run "
            f"{worst_reads:.2f}); polling each job alone, as the SDK does, takes ceil(T/poll-after)+1 = {poll_bound}",
        )
    )
    return rows


# -- the async-mode sweep -----------------------------------------------------------

SWEEP_JOBS, SWEEP_WORKERS = 1000, 16


def bench_sweep(repeats: int, env: dict[str, str], work: Path) -> tuple[str, str, str]:
    """collect-pending draining SWEEP_JOBS finished emulator jobs, S3 ledger to S3 (bench/sweep_worker.py)."""
    runs = []
    for attempt in range(repeats):
        with servers.emulator(0.0, work / f"requests-sweep-{attempt}.jsonl") as base_url:
            args = {"base_url": base_url, "bucket": BUCKET, "n": SWEEP_JOBS, "workers": SWEEP_WORKERS}
            command = [
                sys.executable,
                str(ROOT / "bench" / "sweep_worker.py"),
                json.dumps({**args, "tag": f"sweep-{attempt}"}),
            ]
            done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"sweep worker failed:\n{done.stderr[-3000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  run {attempt + 1}: {runs[-1]['wall']:.1f} s, {runs[-1]['rate']:.0f} videos/s", flush=True)
    return (
        f"collect-pending: {SWEEP_JOBS} finished jobs, S3 ledger -> S3, {SWEEP_WORKERS} workers",
        spread([run["rate"] for run in runs], "videos/s", 0),
        f"one flow run: {spread([run['wall'] for run in runs], 's', 1)} wall, "
        f"CPU {statistics.median(run['cpu'] for run in runs):.1f} s; one INFO log line per video",
    )


# -- a batch spread over Prefect workers ---------------------------------------------

SPREAD_ROWS, SPREAD_LIMIT, SPREAD_IN_FLIGHT, SPREAD_WORKERS = 200, 20, 20, (1, 2, 4)
# The production case: a render time like the provider's, over the most workers, beside one process.
PRODUCTION_WORKERS = (0, 4)
BASELINE_WORKERS = (0,)  # 0: the same batch in one process
# Where spreading must pay: each process may run only this many rows at once (its memory or
# bandwidth, say), a quarter of the render limit; in one process and over the most workers.
NARROW_IN_FLIGHT, NARROW_WORKERS = 5, (0, 4)
SPREAD_POOL = "sora"  # the work pool of prefect.yaml's `shard` deployment
SPREAD_BLOCK = "bench-spread"
# How often an idle worker asks for scheduled runs (Prefect's default is 10 s): at the
# default a shard may wait up to 10 s before its worker even sees it.
WORKER_QUERY_SECONDS = 2


@dataclass
class SpreadRun:
    render: float
    workers: int  # 0: the same batch in one process, no spread
    in_flight: int  # max_in_flight of the parent and of each shard
    wall: float  # the parent's generate_videos call, start to return
    head: float  # from that start to the first create the emulator saw
    creates: int
    peak: int  # most jobs rendering at once, from the emulator's request log
    shards: int  # shard flow runs that started (the parent schedules them only when it has rows it cannot start)


def prefect_cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [str(servers.BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def start_workers(env: dict[str, str], names: list[str], work: Path) -> list[subprocess.Popen[bytes]]:
    """`prefect worker start` processes, each with a PREFECT_HOME and working directory of its own.

    ``--limit 1``: a worker runs one shard at a time, so each takes one of the shards.
    """
    started = []
    for name in names:
        home = work / f"worker-{name}"
        home.mkdir(parents=True, exist_ok=True)
        command = [str(servers.BIN / "prefect"), "worker", "start", "--pool", SPREAD_POOL, "--name", name]
        command += ["--limit", "1"]
        worker_env = {**env, "PREFECT_HOME": str(home), "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage")}
        started.append(
            subprocess.Popen(
                command,
                env=worker_env,
                cwd=home,
                stdout=subprocess.DEVNULL,
                stderr=(home / "worker.log").open("wb"),
                start_new_session=True,
            )
        )
    return started


def shards_started(api_url: str) -> set[str]:
    """Every shard flow run on the server that a worker started (ended or not): their ids."""
    import httpx

    response = httpx.post(
        f"{api_url}/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["shard"]}}, "limit": 200}, timeout=30
    )
    response.raise_for_status()
    return {run["id"] for run in response.json() if run["state_type"] not in ("SCHEDULED", "PENDING", "CANCELLED")}


def wait_for_workers(api_url: str, names: list[str], processes: list[subprocess.Popen[bytes]]) -> None:
    """Until every named worker has said hello to the work pool (before the clock starts)."""
    import httpx

    deadline = time.monotonic() + 180
    while True:
        try:
            response = httpx.post(f"{api_url}/work_pools/{SPREAD_POOL}/workers/filter", json={"limit": 200}, timeout=30)
            seen = {worker["name"] for worker in response.json()} if response.status_code == 200 else set()
        except httpx.HTTPError:
            seen = set()
        if set(names) <= seen:
            return
        if any(process.poll() is not None for process in processes) or time.monotonic() > deadline:
            raise RuntimeError(f"workers {sorted(set(names) - seen)} did not come up")
        time.sleep(0.5)


def bench_spread(renders: list[float], repeats: int, aws: dict[str, str], work: Path) -> list[SpreadRun]:
    """SPREAD_ROWS rows in S3 in one process, then over 1, 2 and 4 `prefect worker start` processes.

    Each render time after the first (the production case) runs in one process and over
    the most workers only. The one-process batch is the same flow with the same saved
    block and render limit, against the same Prefect server: the spread's like for like.
    """
    import boto3

    s3 = boto3.client("s3")
    runs: list[SpreadRun] = []
    with (
        servers.postgres(work / "spread-db") as database,
        servers.prefect_server(work / "spread-server", database) as api_url,
    ):
        print(f"  Prefect server on {'PostgreSQL' if database else 'SQLite (no PostgreSQL installed)'}", flush=True)
        path = os.pathsep.join(part for part in (str(ROOT), os.environ.get("PYTHONPATH")) if part)
        env = servers.child_env(
            {
                **aws,
                "PREFECT_API_URL": api_url,
                "PREFECT_HOME": str(work / "spread-setup"),
                "SORA_PROJECT_DIR": str(ROOT),  # prefect.yaml's pull step: where a shard's code is
                "PYTHONPATH": path,
                "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
            }
        )
        prefect_cli(env, "work-pool", "create", SPREAD_POOL, "--type", "process")
        prefect_cli(env, "--no-prompt", "deploy", "--name", "shard")
        plan = [(renders[0], workers, SPREAD_IN_FLIGHT) for workers in (*BASELINE_WORKERS, *SPREAD_WORKERS)]
        plan += [(renders[0], workers, NARROW_IN_FLIGHT) for workers in NARROW_WORKERS]
        plan += [(render, workers, SPREAD_IN_FLIGHT) for render in renders[1:] for workers in PRODUCTION_WORKERS]
        for attempt in range(repeats):
            for render, workers, in_flight in plan:
                tag = f"spread-{render:g}-{workers}-{in_flight}-{attempt}-{time.time_ns() % 10**9}"
                log = work / f"requests-{tag}.jsonl"
                # A limit of its own per run: its occupancy statistics (Prefect derives the
                # Retry-After of a denied slot from them) start from nothing each time.
                limit = f"bench-rendering-{tag}"
                prefect_cli(env, "gcl", "create", limit, "--limit", str(SPREAD_LIMIT))
                manifest = "".join(json.dumps({"prompt": f"{tag} row {i}"}) + "\n" for i in range(SPREAD_ROWS))
                s3.put_object(Bucket=BUCKET, Key=f"{tag}/manifest.jsonl", Body=manifest.encode())
                with servers.emulator(render, log) as base_url:
                    save = (
                        "from sora_tasks.blocks import VideosApi\n"
                        f"VideosApi(base_url={base_url!r}, poll_interval=0.25, render_limit_name={limit!r})"
                        f".save({SPREAD_BLOCK!r}, overwrite=True)\n"
                    )
                    subprocess.run([sys.executable, "-c", save], env=env, cwd=ROOT, check=True, timeout=300)
                    names = [f"{tag}-w{i}" for i in range(workers)]
                    processes = start_workers(env, names, work / tag)
                    try:
                        wait_for_workers(api_url, names, processes)
                        args = {
                            "n": SPREAD_ROWS,
                            "c": in_flight,
                            "manifest": f"s3://{BUCKET}/{tag}/manifest.jsonl",
                            "output_prefix": f"s3://{BUCKET}/{tag}/out",
                            "api": SPREAD_BLOCK,
                            "shards": workers,
                            "work_pool": SPREAD_POOL,
                        }
                        parent_home = work / tag / "parent"
                        parent_home.mkdir(parents=True, exist_ok=True)
                        before = shards_started(api_url)
                        run = run_worker("spread-parent", args, {**env, "PREFECT_HOME": str(parent_home)})
                        started = len(shards_started(api_url) - before)
                    finally:
                        for process in processes:
                            servers.stop_group(process)
                first_create, _ = servers.request_span(log)
                runs.append(
                    SpreadRun(
                        render,
                        workers,
                        in_flight,
                        run["wall"],
                        first_create - run["started_at"],
                        servers.count_requests(log)["create"],
                        servers.peak_rendering(log),
                        started,
                    )
                )
                last = runs[-1]
                print(
                    f"  T={render:g} s, {workers or 'no'} worker(s), max_in_flight {in_flight}, run {attempt + 1}:"
                    f" {last.wall:.2f} s, shards started {last.shards},"
                    f" first create after {last.head:.2f} s, {last.creates} creates, peak {last.peak} rendering;"
                    f" load average {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    return runs


SPREAD_TARGET, FIRST_CREATE_TARGET = 1.5, 3.0  # x ideal at T=2 s; seconds from the call to the first create
# "No slower with more workers than with one": single runs of the same code differ by a few
# percent on a shared machine, so a run within this much of the one-worker run counts as level.
LEVEL_NOISE = 1.05


def spread_rows(runs: list[SpreadRun], renders: list[float], repeats: int) -> list[tuple[str, str, str]]:
    how = "one run each" if repeats == 1 else f"{repeats} runs each"
    rows = []
    cases = sorted({(run.render, run.in_flight) for run in runs}, key=lambda case: (case[0], -case[1]))
    for render, in_flight in cases:
        ideal = math.ceil(SPREAD_ROWS / SPREAD_LIMIT) * render
        targeted = render == renders[0] and in_flight == SPREAD_IN_FLIGHT  # the targets apply here
        rows.append(
            (
                f"spread batch N={SPREAD_ROWS}, C={SPREAD_LIMIT}, T={render:g} s, max_in_flight {in_flight}: "
                "ideal ceil(N/C)*T",
                f"{ideal:.2f} s",
                f"render limit C (a Prefect GCL); max_in_flight {in_flight} for the parent and each shard; a row is "
                f"taken with a render slot in hand; workers poll every {WORKER_QUERY_SECONDS} s; {how}",
            )
        )
        case = [run for run in runs if (run.render, run.in_flight) == (render, in_flight)]
        mine = {
            workers: [run for run in case if run.workers == workers] for workers in sorted({r.workers for r in case})
        }
        one = statistics.median(run.wall for run in mine[1]) if mine.get(1) else None
        alone = statistics.median(run.wall for run in mine[0]) if mine.get(0) else None
        for workers, theirs in mine.items():
            wall = statistics.median(run.wall for run in theirs)
            head = statistics.median(run.head for run in theirs)
            creates = sorted({run.creates for run in theirs})
            peak = max(run.peak for run in theirs)
            checks = "ok" if creates == [SPREAD_ROWS] and peak <= SPREAD_LIMIT else "FAILED"
            note = f"{wall / ideal:.2f}x ideal"
            if workers and targeted:
                note += f" ({verdict(wall / ideal, SPREAD_TARGET)} <= {SPREAD_TARGET}x)"
                if one is not None and workers > 1:
                    level = "ok" if wall <= one * LEVEL_NOISE else "slower"
                    note += f", {wall / one:.2f}x the 1-worker run ({level})"
            elif workers and alone is not None:
                note += f", {alone / wall:.2f}x as fast as one process"
            if workers:
                note += f"; shards started {'/'.join(str(run.shards) for run in theirs)} of {workers}"
            note += f"; first create after {head:.2f} s"
            if workers and targeted:
                note += f" ({verdict(head, FIRST_CREATE_TARGET)} <= {FIRST_CREATE_TARGET:g} s)"
            note += (
                f"; creates {'/'.join(map(str, creates))} (of {SPREAD_ROWS}), most rendering at once {peak} "
                f"(<= {SPREAD_LIMIT}): {checks}"
            )
            label = "one process, no spread" if not workers else f"{workers} worker{'s' if workers > 1 else ''}"
            rows.append((f"  {label}", spread([run.wall for run in theirs]), note))
    return rows


# -- the command line ---------------------------------------------------------------

CLI_PROMPT = "A paper boat drifting down a rainy street at dusk"
CLI_OVERHEAD_TARGET, CLI_FIRST_TARGET, CLI_INVALID_TARGET = 3.0, 15.0, 1.5
INVALID_CALLS = {
    "invalid --resolution 1920x1080": ["--resolution", "1920x1080"],
    "missing --image": ["--image", "missing.jpg"],
}


@dataclass
class Call:
    wall: float
    cpu: float  # user + system time of the process (and of any child it waited for)
    code: int
    stderr: str


def timed_call(command: list[str], env: dict[str, str], cwd: Path) -> Call:
    """One whole process, interpreter start to exit, on the wall clock."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Call(wall, cpu, done.returncode, done.stderr)


def cli_env(work: Path, name: str, prefect_api: str | None) -> dict[str, str]:
    """A fresh environment for `sora-video`: empty SORA_HOME and PREFECT_HOME, a key, this checkout's code.

    Without ``prefect_api`` nothing points at a Prefect API (no PREFECT_API_URL, no
    profile in the fresh PREFECT_HOME), so the CLI runs the plain core.
    """
    home = work / f"cli-{name}"
    shutil.rmtree(home, ignore_errors=True)  # --keep may hold an earlier run's
    (home / "run").mkdir(parents=True, exist_ok=True)
    dropped = ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH", "SORA_LEDGER", "OPENAI_BASE_URL")
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    path = os.pathsep.join(part for part in (str(ROOT), env.get("PYTHONPATH")) if part)
    env.update(
        SORA_HOME=str(home / "sora"), PREFECT_HOME=str(home / "prefect"), OPENAI_API_KEY="sk-bench", PYTHONPATH=path
    )
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    return env


@dataclass
class CliFigures:
    sdk_first: Call | None = None
    sdk: list[Call] = field(default_factory=list)
    first: dict[str, Call] = field(default_factory=dict)
    later: dict[str, list[Call]] = field(default_factory=dict)
    invalid: dict[str, list[Call]] = field(default_factory=dict)
    invalid_requests: dict[str, int] = field(default_factory=dict)


def walls(calls: list[Call]) -> str:
    return ", ".join(f"{call.wall:.2f}" for call in calls)


def bench_cli(render: float, repeats: int, prefect_api: str, work: Path) -> CliFigures:
    """`sora-video` against the bare SDK, each a whole process, on one emulator rendering in ``render`` s."""
    figures = CliFigures()
    log = work / "requests-cli.jsonl"
    log.unlink(missing_ok=True)
    plain, tracked = cli_env(work, "plain", None), cli_env(work, "prefect", prefect_api)
    with servers.emulator(render, log) as base_url:

        def sdk(i: int) -> Call:
            output = work / f"cli-sdk-{i}.mp4"
            output.unlink(missing_ok=True)
            command = [sys.executable, str(ROOT / "bench" / "sdk_video.py"), base_url, CLI_PROMPT, str(output)]
            return checked(timed_call(command, plain, work), output, "SDK script")

        def cli(kind: str, env: dict[str, str], i: int) -> Call:
            output = work / f"cli-{kind}-{i}.mp4"
            output.unlink(missing_ok=True)
            command = [str(servers.BIN / "sora-video"), "--prompt", CLI_PROMPT, "--output", str(output)]
            command += ["--no-previews"]  # like for like: the SDK script downloads the MP4 only
            command += ["--base-url", base_url, "--request-id", f"bench-{kind}-{i}-{time.time_ns()}"]
            creates = servers.count_requests(log)["create"]
            call = checked(timed_call(command, env, Path(env["SORA_HOME"]).parent / "run"), output, kind)
            if servers.count_requests(log)["create"] != creates + 1:
                raise RuntimeError(f"sora-video ({kind}) call {i} did not make exactly one create")
            return call

        print(f"  load average before: {os.getloadavg()[0]:.2f}", flush=True)
        # The SDK's first process pays for a cold page cache; it is not the baseline.
        figures.sdk_first = sdk(0)
        print(f"  plain SDK script, first call: {figures.sdk_first.wall:.2f} s", flush=True)
        figures.first["plain"] = cli("plain", plain, 1)
        print(f"  sora-video, first call in a fresh environment: {figures.first['plain'].wall:.2f} s", flush=True)
        figures.later["plain"] = []
        for i in range(2, repeats + 2):  # interleaved, so a change in machine load hits both sides
            figures.sdk.append(sdk(i))
            figures.later["plain"].append(cli("plain", plain, i))
            sdk_wall, cli_wall = figures.sdk[-1].wall, figures.later["plain"][-1].wall
            print(f"  call {i}: SDK {sdk_wall:.2f} s, sora-video {cli_wall:.2f} s", flush=True)
        figures.first["prefect"] = cli("prefect", tracked, 1)
        figures.later["prefect"] = [cli("prefect", tracked, i) for i in range(2, repeats + 2)]
        first = figures.first["prefect"].wall
        print(
            f"  sora-video with a Prefect API: first {first:.2f} s, then {walls(figures.later['prefect'])} s",
            flush=True,
        )
        run_dir = Path(plain["SORA_HOME"]).parent / "run"  # holds no missing.jpg
        for label, flags in INVALID_CALLS.items():
            before = sum(servers.count_requests(log).values())
            command = [str(servers.BIN / "sora-video"), "--prompt", "x", *flags, "--base-url", base_url]
            figures.invalid[label] = [timed_call(command, plain, run_dir) for _ in range(repeats)]
            figures.invalid_requests[label] = sum(servers.count_requests(log).values()) - before
            print(f"  {label}: {walls(figures.invalid[label])} s", flush=True)
        print(f"  load average after: {os.getloadavg()[0]:.2f}", flush=True)
    return figures


def checked(call: Call, output: Path, what: str) -> Call:
    if call.code != 0 or not output.exists() or output.stat().st_size == 0:
        raise RuntimeError(f"{what} failed (exit {call.code}):\n{call.stderr[-3000:]}")
    return call


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "NOT met"


def cli_rows(figures: CliFigures, render: float) -> list[tuple[str, str, str]]:
    def wall(calls: list[Call]) -> float:
        return statistics.median(call.wall for call in calls)

    def cpu(calls: list[Call]) -> str:
        return f"CPU {statistics.median(call.cpu for call in calls):.2f} s"

    assert figures.sdk_first is not None
    sdk, later = wall(figures.sdk), f"calls 2-{len(figures.sdk) + 1}"
    plain, tracked = figures.later["plain"], figures.later["prefect"]
    first_over = figures.first["plain"].wall - render
    rows = [
        (
            f"one video at T={render:g} s, whole process: plain SDK script",
            spread([call.wall for call in figures.sdk]),
            f"create_and_poll + download_content; {cpu(figures.sdk)}; its first call {figures.sdk_first.wall:.2f} s",
        ),
        (
            f"  sora-video, no Prefect API, {later}",
            spread([call.wall for call in plain]),
            f"SDK + {wall(plain) - sdk:.2f} s; {cpu(plain)}; "
            f"target <= {CLI_OVERHEAD_TARGET:g} s: {verdict(wall(plain) - sdk, CLI_OVERHEAD_TARGET)}",
        ),
        (
            "  sora-video, no Prefect API, first call (fresh SORA_HOME, PREFECT_HOME)",
            f"{figures.first['plain'].wall:.2f} s",
            f"T + {first_over:.2f} s; target <= T + {CLI_FIRST_TARGET:g} s: {verdict(first_over, CLI_FIRST_TARGET)}",
        ),
        (
            f"  sora-video with a Prefect API (a flow run), {later}",
            spread([call.wall for call in tracked]),
            f"SDK + {wall(tracked) - sdk:.2f} s; {cpu(tracked)}; first call {figures.first['prefect'].wall:.2f} s; "
            "no target",
        ),
    ]
    for number, (label, calls) in enumerate(figures.invalid.items()):
        wrong = [
            problem
            for problem, count in (
                ("exit status not 2", sum(call.code != 2 for call in calls)),
                ("Traceback on stderr", sum("Traceback" in call.stderr for call in calls)),
                ("requests reached the emulator", figures.invalid_requests[label]),
            )
            if count
        ]
        checks = "exit 2, no traceback, no request" if not wrong else "FAILED: " + ", ".join(wrong)
        prefix = "sora-video, whole process: " if number == 0 else "  "
        met = verdict(wall(calls), CLI_INVALID_TARGET)
        rows.append(
            (
                f"{prefix}{label}",
                spread([call.wall for call in calls]),
                f"{checks}; {cpu(calls)}; target <= {CLI_INVALID_TARGET:g} s: {met}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,50,200,500", help="batch sizes N, comma-separated")
    parser.add_argument("--c", type=int, default=20, help="jobs in flight")
    parser.add_argument("--render", type=float, default=2.0, help="emulator render time T in seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--spread-repeats", type=int, default=1, help="runs per worker count in the spread part (each ~1.5 min)"
    )
    parser.add_argument(
        "--production-render",
        type=float,
        default=30.0,
        help="spread part: also this render time (one process and 4 workers; 0 skips it, ~11 minutes)",
    )
    parser.add_argument("--big-mb", type=int, default=1024, help="size of the video in the memory benchmark")
    parser.add_argument("--docs", type=Path, help="write the table into <docs>/benchmarks.md, the plot, the profile")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which measurements, of {','.join(PARTS)}")
    parser.add_argument("--keep", type=Path, help="keep the emulator request logs in this directory")
    parser.add_argument(
        "--profile", type=Path, help="batch part: one more traced flow run per size under pyinstrument, into this dir"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if unknown := parts - set(PARTS):
        parser.error(f"unknown --parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    if args.docs and parts != set(PARTS):
        parser.error("--docs needs every part")
    sizes = [int(size) for size in args.sizes.split(",")]

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    rows: list[tuple[str, str, str]] = []
    with (
        tempfile.TemporaryDirectory(prefix="sora-bench-") as scratch,
        prefect_test_harness(server_startup_timeout=60),
        servers.moto_s3() as aws,
    ):
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        env = servers.child_env({"PREFECT_API_URL": str(PREFECT_API_URL.value()), **aws})
        os.environ.update(aws)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)

        batches = []
        if "batch" in parts:
            warm_prefect(env, work)
            for n in sizes:
                print(f"batch N={n}, C={args.c}, T={args.render} s", flush=True)
                batches.append(bench_batch(n, args.c, args.render, args.repeats, env, work))
                if args.profile:
                    profile_batch(n, args.c, args.render, env, work, args.profile)
            rows += batch_rows(batches, args.c, args.render)
        if "memory" in parts:
            print(f"memory: a {args.big_mb} MB video", flush=True)
            memory = bench_memory(args.big_mb, env, work)
            for kind, label in (("big-flow", "sync flow (streamed)"), ("big-bytes", "whole bytes in memory")):
                rows.append(
                    (
                        f"{args.big_mb} MB video to S3: {label}",
                        f"peak RSS {memory[kind]['peak_rss_mb']:.0f} MB",
                        f"{memory[kind]['rss_before_mb']:.0f} MB after imports, {memory[kind]['wall']:.1f} s",
                    )
                )
        profile = (args.docs or work) / "benchmarks-overhead-profile.txt"
        if "overhead" in parts:
            print("orchestration overhead at T=0", flush=True)
            overhead = bench_overhead(5, env, work, profile)
            rows.append(
                (
                    "sync flow per video at T=0 vs plain SDK",
                    f"{overhead['flow']:.2f} s vs {overhead['sdk']:.3f} s",
                    f"flow CPU {overhead['profile_cpu']:.2f} s/video; profile in {profile.name}",
                )
            )
        if "cli" in parts:
            repeats = max(5, args.repeats)
            print(f"sora-video against the plain SDK, T={args.render:g} s, {repeats} calls each", flush=True)
            rows += cli_rows(bench_cli(args.render, repeats, str(PREFECT_API_URL.value()), work), args.render)
        if "sweep" in parts:
            print(f"collect-pending draining {SWEEP_JOBS} finished jobs", flush=True)
            rows.append(bench_sweep(args.repeats, env, work))
        if "spread" in parts:
            print(f"spread batch: {SPREAD_ROWS} rows over {', '.join(map(str, SPREAD_WORKERS))} workers", flush=True)
            renders = [args.render] + ([args.production_render] if args.production_render else [])
            spread_runs = bench_spread(renders, args.spread_repeats, aws, work)
            rows += spread_rows(spread_runs, renders, args.spread_repeats)
    if "preprocess" in parts:
        pre = bench_preprocess(max(5, args.repeats))
        rows.append(("24 MP JPEG fitted to 1280x720", spread(pre), "target <= 0.25 s"))
    if "quality" in parts:
        print("quality check of a 12 s 1792x1024 video", flush=True)
        with tempfile.TemporaryDirectory(prefix="sora-bench-quality-") as scratch:
            rows += quality_rows(quality_check.measure(max(5, args.repeats), Path(scratch)))

    width = max(len(name) for name, _, _ in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<30} {note}")
    if args.docs:
        plot(batches, args.c, args.render, args.docs / "benchmarks.png")
        table = "\n".join(f"| {name.strip()} | {value} | {note} |" for name, value, note in rows)
        command = f"python bench/run.py --sizes {args.sizes} --c {args.c} --render {args.render:g} "
        command += f"--repeats {args.repeats} --spread-repeats {args.spread_repeats} "
        command += f"--production-render {args.production_render:g} --big-mb {args.big_mb} "
        command += f"--docs {args.docs}"
        generated = (
            f"Produced by `{command}` ({os.cpu_count()} CPUs); medians with (min-max).\n\n"
            "| measure | figure | note |\n|---|---|---|\n" + table + "\n"
        )
        written = write_table(args.docs, generated)
        print(f"\nwrote {written}, {args.docs / 'benchmarks.png'}, {profile}")


def quality_rows(measured: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, str]]:
    runs = measured["big"]
    cpu = [run["cpu"] for run in runs]
    rss = [run["extra_rss_mb"] for run in runs]
    first, video = runs[0], f"{quality_check.SECONDS} s {quality_check.WIDTH}x{quality_check.HEIGHT}"
    cpu_met = verdict(statistics.median(cpu), quality_check.CPU_TARGET)
    rss_met = verdict(statistics.median(rss), quality_check.RSS_TARGET_MB)
    row = measured["emulator"]
    return [
        (
            f"quality check of a {video} video: CPU",
            spread(cpu),
            f"{first['frames']} frames, {first['samples']} looked at, {first['mb']:.1f} MB file "
            f"(libx264 default preset); target <= {quality_check.CPU_TARGET:g} s: {cpu_met}",
        ),
        (
            "  peak RSS added by the check",
            spread(rss, "MB", 1),
            f"VmHWM growth in a fresh process after imports; target <= {quality_check.RSS_TARGET_MB:g} MB: {rss_met}",
        ),
        (
            "  the emulator's 4 s 1280x720 video (a batch row's): CPU",
            spread([run["cpu"] for run in row], digits=3),
            f"{row[0]['frames']} frames, {row[0]['samples']} looked at; ultrafast, no B-frames: every frame decoded; "
            "no target",
        ),
    ]


TABLE_START, TABLE_END = "<!-- bench table: written by bench/run.py -->", "<!-- end of bench table -->"


def write_table(docs: Path, generated: str) -> Path:
    """Into benchmarks.md between its markers (the prose around stays), else a file of its own."""
    page = docs / "benchmarks.md"
    text = page.read_text(encoding="utf-8") if page.exists() else ""
    if TABLE_START in text and TABLE_END in text:
        before, rest = text.split(TABLE_START, 1)
        after = rest.split(TABLE_END, 1)[1]
        page.write_text(f"{before}{TABLE_START}\n{generated}{TABLE_END}{after}", encoding="utf-8")
        return page
    table = docs / "benchmarks-table.md"
    table.write_text(generated, encoding="utf-8")
    return table


if __name__ == "__main__":
    main()
