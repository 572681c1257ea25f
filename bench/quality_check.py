"""What the quality check of a finished video costs: CPU seconds and memory beyond the process's own.

    python bench/run.py --parts quality --repeats 5

The video is 12 s of 1792x1024 at 24 fps (sora-2-pro's largest, longest), encoded with
libx264's default preset (B-frames, CABAC: as a provider's file is, and slower to decode
than the emulator's ``ultrafast`` ones) from coarse blocks that move every frame. Each
measurement is a fresh process that has imported everything first (PyAV, NumPy; a
worker pays for those once, not per video): the CPU time is
``time.process_time()`` around ``inspect_video`` (every thread counted), the memory the
growth of the peak resident set (``VmHWM`` in ``/proc/self/status``) across the call.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

WIDTH, HEIGHT, SECONDS, FPS = 1792, 1024, 12, 24
CPU_TARGET, RSS_TARGET_MB = 0.5, 50.0

CHILD = """
import json, sys, time
import av, numpy  # imported once by any process that checks videos: not the check's cost
from sora_tasks.core.media.quality import Expectation, inspect_video

path, size, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])


def peak_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


before = peak_kb()
started = time.process_time()
report = inspect_video(path, Expectation.of(size, seconds))
cpu = time.process_time() - started
print(json.dumps({"cpu": cpu, "extra_rss_mb": (peak_kb() - before) / 1024, "ok": report.ok,
                  "samples": report.figures.get("samples"), "frames": report.figures.get("frames")}))
"""


def make_video(path: Path) -> Path:
    import av
    import numpy as np

    rng = np.random.default_rng(3)
    blocks = (rng.random((HEIGHT // 32, WIDTH // 32, 3)) * 200 + 30).astype(np.uint8).repeat(32, 0).repeat(32, 1)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        for index in range(SECONDS * FPS):
            frame = av.VideoFrame.from_ndarray(np.roll(blocks, 6 * index, axis=1), format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def measure(repeats: int, work: Path) -> dict[str, list[dict[str, float]]]:
    """Runs on the big video, and on what a batch row checks: the emulator's 4 s 1280x720 render."""
    from sora_tasks.emulator.render import render_job

    videos = {
        "big": (make_video(work / "quality-12s-1792x1024.mp4"), f"{WIDTH}x{HEIGHT}", SECONDS),
        "emulator": (render_job(work / "emulator", prompt="a row", size="1280x720", seconds=4).video, "1280x720", 4),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in videos}
    for name, (video, size, seconds) in videos.items():
        for _ in range(repeats):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(video), size, str(seconds)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                raise RuntimeError(f"quality check benchmark failed:\n{done.stderr[-3000:]}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            if not run["ok"]:
                raise RuntimeError(f"the benchmark's good video failed the check: {run}")
            runs[name].append({**run, "mb": video.stat().st_size / 1e6})
    return runs
