"""What a Prefect global concurrency limit costs a holder, on its own: no videos, no flow runs.

    python bench/gcl_probe.py --rows 200 --cap 20 --hold 2   # about a minute

Starts a `prefect server start` process and a limit of ``--cap`` slots, then runs
``--rows`` rows on 2x``--cap`` threads in this one process. Each row takes one of ``--cap``
local slots (as a batch's ``max_in_flight`` does), then one slot of the limit through
``prefect.concurrency.sync.concurrency`` with a lease (``--holder prefect``) or through
``sora_tasks.leases.holding_lease`` (``--holder sora``, what ``sora_tasks.tasks.rendering_slot``
uses), holds it ``--hold`` seconds and gives it back. The ideal is ceil(rows/cap)*hold.
Prints the wall time, how long entering and leaving the limit took, the HTTP request
inside the acquisition, denials (423), and the CPU time this process used.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import servers  # bench/ is not a package


def spread_of(values: list[float]) -> str:
    if not values:
        return "not used"
    return f"median {statistics.median(values):.3f} s, max {max(values):.3f} s"


def probe(name: str, rows: int, cap: int, hold: float, holder: str = "prefect") -> None:
    import httpx
    import prefect.concurrency._sync as sync_concurrency
    from prefect.client.orchestration import PrefectClient
    from prefect.concurrency.sync import concurrency

    requests: list[tuple[float, int]] = []
    acquisitions: list[float] = []
    releases: list[float] = []
    original_request = PrefectClient.increment_concurrency_slots_with_lease
    original_acquire = sync_concurrency.acquire_concurrency_slots_with_lease
    original_release = sync_concurrency.release_concurrency_slots_with_lease

    async def timed_request(self: PrefectClient, *args: Any, **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await original_request(self, *args, **kwargs)
        except httpx.HTTPStatusError as error:
            requests.append((time.perf_counter() - started, error.response.status_code))
            raise
        requests.append((time.perf_counter() - started, response.status_code))
        return response

    def timed(original: Any, into: list[float]) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                into.append(time.perf_counter() - started)

        return call

    PrefectClient.increment_concurrency_slots_with_lease = timed_request  # type: ignore[method-assign,assignment]
    sync_concurrency.acquire_concurrency_slots_with_lease = timed(original_acquire, acquisitions)
    sync_concurrency.release_concurrency_slots_with_lease = timed(original_release, releases)

    local = threading.BoundedSemaphore(cap)
    entering: list[float] = []
    leaving: list[float] = []

    def row(_: int) -> None:
        with local:
            started = time.perf_counter()
            if holder == "sora":
                from sora_tasks.leases import holding_lease

                slot = holding_lease(name, lease_duration=120)
            else:
                slot = concurrency(name, occupy=1, lease_duration=600, strict=True)
            slot.__enter__()
            entering.append(time.perf_counter() - started)
            time.sleep(hold)
            started = time.perf_counter()
            slot.__exit__(None, None, None)
            leaving.append(time.perf_counter() - started)

    cpu_before, started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(2 * cap) as pool:
        list(pool.map(row, range(rows)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    ideal = math.ceil(rows / cap) * hold
    granted = [seconds for seconds, status in requests if status < 300]
    denied = sum(status == 423 for _, status in requests)
    ratio = wall / ideal
    print(f"[{holder}] {rows} rows, {cap} slots, each held {hold:g} s: {wall:.2f} s", end="")
    print(f" (ideal {ideal:.2f} s, {ratio:.2f}x)")
    print(f"  entering the limit:  {spread_of(entering)}")
    print(f"    of which acquire_concurrency_slots_with_lease: {spread_of(acquisitions)}")
    print(f"    of which its HTTP request: {spread_of(granted)}; {denied} denied (423)")
    print(f"  leaving the limit:   {spread_of(leaving)}")
    print(f"    of which release_concurrency_slots_with_lease: {spread_of(releases)}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  CPU of this process: {cpu:.2f} s ({cpu / rows * 1000:.0f} ms per row); peak RSS {peak:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--cap", type=int, default=20, help="slots of the limit, and local slots")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each row holds its slot")
    parser.add_argument(
        "--holder",
        choices=("prefect", "sora", "both"),
        default="both",
        help="prefect.concurrency.sync.concurrency, sora_tasks.leases.holding_lease (the batch's), or both",
    )
    args = parser.parse_args()
    if args.rows < 1 or args.cap < 1:
        parser.error("--rows and --cap must be at least 1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    with tempfile.TemporaryDirectory(prefix="gcl-probe-") as scratch, servers.prefect_server(Path(scratch)) as api:
        env = servers.child_env({"PREFECT_API_URL": api, "PREFECT_HOME": scratch})
        command = [str(servers.BIN / "prefect"), "gcl", "create", "probe", "--limit", str(args.cap)]
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
        os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=scratch)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for holder in ("prefect", "sora") if args.holder == "both" else (args.holder,):
            probe("probe", args.rows, args.cap, args.hold, holder)
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
