"""Reading a test Prefect server's REST API the way Prefect's own client does: retrying 429/502/503.

A Prefect server on SQLite answers 503 when its database is busy (another writer holds the
lock: the scheduler, a worker, the flow under test). Prefect's client retries those; a bare
``httpx`` call would fail the test on a server that is working as designed.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from prefect.settings import PREFECT_API_URL

RETRIED_STATUSES = frozenset({429, 502, 503})
ATTEMPTS = 6  # Prefect's client: PREFECT_CLIENT_MAX_RETRIES=5 retries after the first try


def prefect_api(method: str, path: str, *, json: Any = None, api_url: str | None = None) -> Any:
    """Send one request to ``api_url`` (default: the in-process harness's) and return its JSON body."""
    url = f"{api_url or PREFECT_API_URL.value()}{path}"
    for attempt in range(ATTEMPTS):
        response = httpx.request(method, url, json=json, timeout=30)
        if response.status_code not in RETRIED_STATUSES or attempt == ATTEMPTS - 1:
            break
        time.sleep(min(0.25 * 2**attempt, 4.0))
    response.raise_for_status()
    return response.json()


def sora_events(video_id: str, expected: set[str]) -> set[str]:
    """The sora.video.* events Prefect recorded for one video (waits for them to be persisted)."""
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not expected <= seen:
        found = prefect_api(
            "POST", "/events/filter", json={"filter": {"resource": {"id": [f"sora.video.{video_id}"]}}, "limit": 50}
        )
        seen = {event["event"] for event in found["events"]}
        time.sleep(0.3)
    return seen
