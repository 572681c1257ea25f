"""Render slots (sora_tasks.leases) on a real `prefect server start`: two processes share one limit.

Each process runs rows in threads that hold a slot for a moment, as a batch's rows do
while their jobs render. The limit holds across both processes, a slot given back while
another row of the same process waits is handed over (fewer grants than holds), and
nothing is left held on the server afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from .test_spread import PROJECT, prefect

LIMIT, THREADS, HOLD_SECONDS = 3, 6, 0.3

# Every grant the server makes to this process, counted (the real request underneath).
COUNTING = """
from sora_tasks import leases

holder = leases.lease_holder(60.0)
grants = []
ask = holder._client.increment_concurrency_slots_with_lease

def counted(*args, **kwargs):  # the real request, counted
    response = ask(*args, **kwargs)
    grants.append(1)
    return response

holder._client.increment_concurrency_slots_with_lease = counted
"""

ROWS = (
    COUNTING
    + """
import json, sys, threading, time

name, threads, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
spans, lock = [], threading.Lock()

def row():
    for _ in range(2):
        with leases.holding_lease(name, lease_duration=60.0):
            began = time.time()
            time.sleep(hold)
            with lock:
                spans.append((began, time.time()))

workers = [threading.Thread(target=row) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(json.dumps({"spans": spans, "grants": len(grants)}))
"""
)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.slow
def test_two_processes_share_the_limit_and_hand_slots_over(prefect_server_env: dict[str, str]) -> None:
    env = {**os.environ, **prefect_server_env}
    name = f"rendering-{uuid.uuid4().hex[:6]}"
    prefect(env, "gcl", "create", name, "--limit", str(LIMIT))
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ROWS, name, str(THREADS), str(HOLD_SECONDS)],
            env=env,
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results: list[dict[str, Any]] = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
        assert results[-1]["spans"], err[-3000:]
    spans = [(float(start), float(end)) for result in results for start, end in result["spans"]]
    holds = 2 * THREADS
    print(
        f"holds per process {holds}, grants {[result['grants'] for result in results]}, "
        f"most at once {most_at_once(spans)} (limit {LIMIT})"
    )
    assert len(spans) == 2 * holds
    # A few milliseconds of clock between a release and the next start in another process.
    assert most_at_once(spans) <= LIMIT
    # Handed over within a process: fewer grants from the server than slots held.
    assert all(result["grants"] < holds for result in results), results
    assert active_slots(env, name) == 0


def active_slots(env: dict[str, str], name: str) -> int:
    code = (
        "import sys\nfrom prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as client:\n"
        "    print(client.read_global_concurrency_limit_by_name(sys.argv[1]).active_slots)\n"
    )
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(
            [sys.executable, "-c", code, name], env=env, cwd=Path(PROJECT), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        held = int(done.stdout.strip())
        if held == 0 or time.monotonic() > deadline:
            return held
        time.sleep(0.5)


RESERVING = (
    COUNTING
    + """
import json, sys, time

name = sys.argv[1]
slots = leases.LimitSlots(name, 60.0)
seen = {}
first = slots.reserve(patience=5.0)
second = slots.reserve(patience=5.0)
seen["reserved"] = [first is not None, second is not None]
seen["refused within patience"] = slots.reserve(patience=0.3) is None  # the limit is 2: full
seen["in use after reserving"] = slots.in_use()
slots.assign(first, "batch:1")
with leases.holding_lease(name, lease_duration=60.0, reserved="batch:1"):
    seen["grants while holding the reserved one"] = len(grants)
slots.unreserve(second)  # nobody takes it: kept a moment, then given back
seen["in use once given back"] = slots.in_use()
with leases.holding_lease(name, lease_duration=60.0):  # takes a kept one: no request
    seen["grants for a row right after"] = len(grants)
time.sleep(leases.LINGER + 0.5)
seen["kept after the linger"] = slots.in_use() + len(holder._idle[name])
print(json.dumps(seen))
"""
)


@pytest.mark.slow
def test_a_slot_reserved_for_a_row_is_the_one_it_holds_and_nothing_stays_held(
    prefect_server_env: dict[str, str],
) -> None:
    env = {**os.environ, **prefect_server_env}
    name = f"reserving-{uuid.uuid4().hex[:6]}"
    prefect(env, "gcl", "create", name, "--limit", "2")
    done = subprocess.run(
        [sys.executable, "-c", RESERVING, name], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    print(seen)
    assert seen == {
        "reserved": [True, True],
        "refused within patience": True,
        "in use after reserving": 2,
        "grants while holding the reserved one": 2,  # the reserved slot, not a third request
        "in use once given back": 0,
        "grants for a row right after": 2,
        "kept after the linger": 0,
    }
    assert active_slots(env, name) == 0  # everything went back to the server
