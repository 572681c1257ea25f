"""Benchmarks: what is ours around the provider's render time, measured against the emulator.

    python bench/run.py                  # quick: N=50 batch, image preprocessing, overhead
    python bench/run.py --n 200 --repeats 3 --markdown docs/benchmarks.md

Figures are medians of --repeats runs with their min-max spread. Everything runs on
127.0.0.1: the emulator (render time T, shared renders) and, with --s3, a moto server.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("OPENAI_API_KEY", "sk-bench")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def repeat(times: int, measure: Callable[[], float]) -> list[float]:
    return [measure() for _ in range(times)]


def baseline_batch(base_url: str, prompts: list[str], concurrency: int, out: Path) -> None:
    """The plain-SDK way: a thread pool of create_and_poll + streamed download, no Prefect."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="sk-bench", max_retries=3)

    def one(prompt: str) -> None:
        video = client.videos.create_and_poll(prompt=prompt, model="sora-2", seconds="4", size="1280x720")
        with client.videos.with_streaming_response.download_content(video.id) as response:
            response.stream_to_file(out / f"{video.id}.mp4")

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, prompts))


def bench_batch(n: int, concurrency: int, render: float, repeats: int) -> dict[str, object]:
    from flows.batch import generate_videos
    from sora_tasks.emulator import EmulatorConfig, run_emulator

    flow_times, base_times, per_video = [], [], {}
    for attempt in range(repeats):
        config = EmulatorConfig(render_seconds=render, poll_after_ms=250, reuse_renders=True)
        with tempfile.TemporaryDirectory() as work, run_emulator(config) as emulator:
            manifest = Path(work) / "m.jsonl"
            manifest.write_text("".join(json.dumps({"prompt": f"bench {attempt} {i}"}) + "\n" for i in range(n)))
            started = time.monotonic()
            generate_videos(
                manifest=str(manifest),
                output_prefix=f"{work}/flow",
                max_in_flight=concurrency,
                rate_limit_name=None,
                base_url=emulator.base_url,
                poll_interval=0.25,
            )
            flow_times.append(time.monotonic() - started)
            per_video = {
                "creates": emulator.state.count("create") / n,
                "polls": emulator.state.count("retrieve") / n,
                "downloads": emulator.state.count("content") / n,
            }
            emulator.state.reset()
            out = Path(work) / "base"
            out.mkdir()
            started = time.monotonic()
            baseline_batch(emulator.base_url, [f"base {attempt} {i}" for i in range(n)], concurrency, out)
            base_times.append(time.monotonic() - started)
    limit = math.ceil(n / concurrency) * render
    return {
        "n": n,
        "c": concurrency,
        "t": render,
        "limit": limit,
        "flow": flow_times,
        "baseline": base_times,
        "per_video": per_video,
        "poll_bound": math.ceil(render / 0.25) + 1,
    }


def bench_preprocess(repeats: int) -> list[float]:
    from PIL import Image

    from sora_tasks.core import prepare_image

    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((6000, 4000)).convert("RGB").save(buffer, format="JPEG", quality=90)
    photo = buffer.getvalue()

    def once() -> float:
        started = time.perf_counter()
        prepare_image(photo, "1280x720")
        return time.perf_counter() - started

    return repeat(repeats, once)


def bench_overhead(videos: int) -> dict[str, float]:
    """Per-video time of the sync flow vs the plain SDK with a zero render time."""
    from openai import OpenAI

    from flows.generate import generate_video
    from sora_tasks.emulator import EmulatorConfig, run_emulator

    with (
        tempfile.TemporaryDirectory() as work,
        run_emulator(EmulatorConfig(render_seconds=0.0, reuse_renders=True)) as emulator,
    ):
        client = OpenAI(base_url=emulator.base_url, api_key="sk-bench")
        client.videos.create_and_poll(prompt="warm-up", poll_interval_ms=20)
        generate_video(prompt="warm-up", base_url=emulator.base_url, output=f"{work}/w.mp4", poll_interval=0.02)
        started = time.monotonic()
        for i in range(videos):
            video = client.videos.create_and_poll(prompt=f"sdk {i}", poll_interval_ms=20)
            Path(work, f"{i}.mp4").write_bytes(client.videos.download_content(video.id).content)
        sdk = (time.monotonic() - started) / videos
        started = time.monotonic()
        for i in range(videos):
            generate_video(
                prompt=f"flow {i}", base_url=emulator.base_url, output=f"{work}/f{i}.mp4", poll_interval=0.02
            )
        flow = (time.monotonic() - started) / videos
    return {"sdk": sdk, "flow": flow}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50, help="videos in the batch benchmark")
    parser.add_argument("--c", type=int, default=20, help="jobs in flight")
    parser.add_argument("--render", type=float, default=2.0, help="emulator render time T in seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    rows: list[tuple[str, str, str]] = []
    with prefect_test_harness(server_startup_timeout=60):
        batch = bench_batch(args.n, args.c, args.render, args.repeats)
        flow_median = statistics.median(batch["flow"])  # type: ignore[arg-type]
        rows += [
            (f"batch N={args.n}, C={args.c}, T={args.render}s: limit ceil(N/C)*T", f"{batch['limit']:.2f} s", "-"),
            ("  generate_videos flow", f"{spread(batch['flow'])} s", f"{flow_median / batch['limit']:.2f}x limit"),  # type: ignore[arg-type]
            ("  plain SDK baseline (threads)", f"{spread(batch['baseline'])} s", "-"),  # type: ignore[arg-type]
        ]
        per_video = batch["per_video"]
        rows.append(
            (
                "requests per video (create / poll / download)",
                "{creates:.2f} / {polls:.2f} / {downloads:.2f}".format(**per_video),  # type: ignore[str-format]
                f"poll bound {batch['poll_bound']}",
            )
        )
        overhead = bench_overhead(5)
        rows.append(
            (
                "sync flow per video at T=0 vs plain SDK",
                f"{overhead['flow']:.2f} s vs {overhead['sdk']:.3f} s",
                f"+{overhead['flow'] - overhead['sdk']:.2f} s orchestration",
            )
        )
    pre = bench_preprocess(max(5, args.repeats))
    rows.append(("24 MP JPEG fitted to 1280x720", f"{spread(pre)} s", "target <= 0.25 s"))

    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<28} {note}")
    if args.markdown:
        table = "\n".join(f"| {name.strip()} | {value} | {note} |" for name, value, note in rows)
        args.markdown.write_text(
            "# Benchmarks\n\nProduced by `python bench/run.py "
            f"--n {args.n} --c {args.c} --render {args.render} --repeats {args.repeats}` on the 2-core CI machine; "
            "medians with (min-max).\n\n| measure | figure | note |\n|---|---|---|\n" + table + "\n"
        )


if __name__ == "__main__":
    main()
