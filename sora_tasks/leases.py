"""Slots of a Prefect global concurrency limit, held on leases through one client per process.

The account's render limit is a Prefect global concurrency limit: a row holds one slot
while its job renders, on a lease the server frees by itself if the holder dies. Prefect's
own ``concurrency()`` context manager does this correctly but slowly for hundreds of
holders in one process (``bench/gcl_probe.py``): it queues every acquisition through one
service that sleeps out each refusal before trying the next, builds a new client (with
its own TLS context) for each release and starts a renewal thread, with a client of its
own, for each held slot. Here one long-lived client per process does every request, one
thread renews every lease this process holds, and a refused row waits on its own.

The requests are Prefect's (``increment-with-lease``, ``leases/{id}/renew``,
``decrement-with-lease``), so the server's view of the limit is the same.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

logger = logging.getLogger("sora_tasks")

# A refused row tries again after the server's Retry-After, within these bounds (seconds).
MIN_RETRY = 0.1
MAX_RETRY = 5.0


class LeaseHolder:
    """Every lease this process holds on one Prefect API, and the thread that renews them."""

    def __init__(self, lease_duration: float) -> None:
        from prefect.client.orchestration import get_client

        self.lease_duration = lease_duration
        self._client: Any = get_client(sync_client=True)
        self._client.__enter__()  # lives as long as the process: one connection pool, one TLS context
        self._leases: set[UUID] = set()
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def acquire(self, name: str, holder: Any = None) -> UUID:
        """One slot of ``name``: waits (Retry-After) while the limit is full.

        ``holder`` (a ``ConcurrencyLeaseHolder``) names the run the UI shows holding the slot.
        """
        import httpx

        while True:
            try:
                response = self._client.increment_concurrency_slots_with_lease(
                    names=[name], slots=1, mode="concurrency", lease_duration=self.lease_duration, holder=holder
                )
            except httpx.HTTPStatusError as error:
                if error.response.status_code != 423:
                    raise
                retry_after = float(error.response.headers.get("Retry-After") or 1.0)
                # Jitter: rows refused together should not all come back together.
                time.sleep(min(MAX_RETRY, max(MIN_RETRY, retry_after)) * random.uniform(0.5, 1.0))
                continue
            lease_id = UUID(response.json()["lease_id"])
            with self._lock:
                self._leases.add(lease_id)
                self._start_renewer()
            return lease_id

    def release(self, lease_id: UUID) -> None:
        with self._lock:
            self._leases.discard(lease_id)
        try:
            self._client.release_concurrency_slots_with_lease(lease_id)
        except Exception as error:  # the lease runs out by itself; the video must not fail for this
            logger.warning(
                "could not release render slot (lease %s): %s; it frees itself when it expires", lease_id, error
            )

    def _start_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew_forever, name="sora-lease-renewer", daemon=True)
            self._renewer.start()

    def _renew_forever(self) -> None:
        # Renewed at a third of the lease, so one missed renewal (a slow server) loses nothing.
        while True:
            time.sleep(self.lease_duration / 3)
            with self._lock:
                leases = list(self._leases)
            for lease_id in leases:
                try:
                    self._client.renew_concurrency_lease(lease_id, lease_duration=self.lease_duration)
                except Exception as error:
                    logger.warning("could not renew render slot lease %s: %s", lease_id, error)


_holders: dict[tuple[str, float], LeaseHolder] = {}
_holders_lock = threading.Lock()


def lease_holder(lease_duration: float) -> LeaseHolder:
    """This process's holder for the Prefect API configured now (a test may switch servers)."""
    from prefect.settings import PREFECT_API_URL

    key = (str(PREFECT_API_URL.value()), lease_duration)
    with _holders_lock:
        if key not in _holders:
            _holders[key] = LeaseHolder(lease_duration)
        return _holders[key]


@contextmanager
def holding_lease(name: str, *, lease_duration: float) -> Iterator[None]:
    """Hold one slot of the global concurrency limit ``name`` while the block runs."""
    holder = lease_holder(lease_duration)
    lease_id = holder.acquire(name, _current_run())
    try:
        yield
    finally:
        holder.release(lease_id)


def _current_run() -> Any:
    """The task run (else flow run) holding the slot, as Prefect's own ``concurrency()`` records it."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import FlowRunContext, TaskRunContext

    task_run = TaskRunContext.get()
    if task_run is not None:
        return ConcurrencyLeaseHolder(type="task_run", id=task_run.task_run.id)
    flow_run = FlowRunContext.get()
    if flow_run is not None and flow_run.flow_run is not None:
        return ConcurrencyLeaseHolder(type="flow_run", id=flow_run.flow_run.id)
    return None
