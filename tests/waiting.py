"""Waiting for a test server to answer, shared by the fixtures that start them."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx


def wait_until_answering(
    url: str, *, what: str, timeout: float, process: subprocess.Popen[bytes] | None = None, ok_below: int = 300
) -> None:
    """Return once GET ``url`` answers with a status below ``ok_below``; fail if the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < ok_below:
                return
        except httpx.HTTPError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before answering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")
        time.sleep(0.3)


def wait_until_completed(state: Any, job: Any, timeout: float = 60) -> None:
    """Return once the emulator would answer ``completed`` for ``job``.

    Its render finishing is not enough: the status comes from the clock too (the job is
    in progress for ``render_seconds``), and a render from the shared clip cache finishes
    at once.
    """
    job.render.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while state.describe(job)["status"] != "completed":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{job.id} did not complete within {timeout:.0f} s")
        time.sleep(0.05)
