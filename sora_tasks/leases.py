"""Slots of a Prefect global concurrency limit, held on leases through one client per process.

The account's render limit is a Prefect global concurrency limit: a row holds one slot
while its job renders, on a lease the server frees by itself if the holder dies. Prefect's
own ``concurrency()`` context manager does this correctly but slowly for hundreds of
holders in one process (``bench/gcl_probe.py``): it queues every acquisition through one
service that sleeps out each refusal before trying the next, builds a new client (with
its own TLS context) for each release and starts a renewal thread, with a client of its
own, for each held slot. Here one long-lived client per process does every request and
one thread renews every lease this process holds.

A slot a row gives back while another row of this process waits for one is handed to
that row, lease and all, instead of being released and asked for again: a refused
request waits out the server's Retry-After, so a release followed by an acquire left the
slot idle for up to seconds (a 200-row batch on a 20-slot limit took 38 s in one process
against 24 s without the limit) and, across several shard processes, every waiting row
asked the server again and again (a 4-shard batch drew 503s from a SQLite-backed server).
Only one thread per process and limit asks the server at a time; the others wait for it
or for a handed-over slot. A handed-over lease keeps the holder Prefect recorded when it
was taken (the first row's task run).

The requests are Prefect's (``increment-with-lease``, ``leases/{id}/renew``,
``decrement-with-lease``), so the server's view of the limit is the same.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

logger = logging.getLogger("sora_tasks")

# A refused row tries again after the server's Retry-After, within these bounds (seconds).
# Only one thread per process asks, so a short bound costs the server little and a slot
# another process frees is taken within a second.
MIN_RETRY = 0.1
MAX_RETRY = 1.0
# A server that keeps failing (5xx after the client's own retries, or unreachable) is asked
# again for this long before the row fails: nothing has been paid for yet at this point.
UNAVAILABLE_FOR = 300.0
UNAVAILABLE_PAUSE = 5.0


class LeaseHolder:
    """Every lease this process holds on one Prefect API, and the thread that renews them."""

    def __init__(self, lease_duration: float) -> None:
        from prefect.client.orchestration import get_client

        self.lease_duration = lease_duration
        self._client: Any = get_client(sync_client=True)
        self._client.__enter__()  # lives as long as the process: one connection pool, one TLS context
        self._leases: set[UUID] = set()  # every lease held, in use or idle: all are renewed
        self._idle: defaultdict[str, list[UUID]] = defaultdict(list)  # given back while a row waited
        self._waiting: Counter[str] = Counter()  # rows of this process waiting for a slot, per limit
        self._asking: set[str] = set()  # limits a thread of this process is asking the server for now
        # Releases of this process the server has finished, per limit: a refusal that crossed
        # one is asked again at once, not after the server's Retry-After.
        self._released: Counter[str] = Counter()
        self._lock = threading.Condition()
        self._renewer: threading.Thread | None = None

    def acquire(self, name: str, holder: Any = None) -> UUID:
        """One slot of ``name``: a slot another row of this process gives back, or one from the server.

        ``holder`` (a ``ConcurrencyLeaseHolder``) names the run the UI shows holding the slot.
        """
        with self._lock:
            self._waiting[name] += 1
            try:
                lease_id = self._take_or_ask(name, holder)
            finally:
                self._waiting[name] -= 1
                unneeded: list[UUID] = []
                if not self._waiting[name]:
                    # Handed over while the server granted one too: nobody is left to use it.
                    unneeded, self._idle[name] = self._idle[name], []
                    self._leases.difference_update(unneeded)
        for extra in unneeded:
            self._release(name, extra)
        return lease_id

    def waiting(self, name: str) -> int:
        with self._lock:
            return self._waiting[name]

    def _take_or_ask(self, name: str, holder: Any) -> UUID:
        """A handed-over slot, else ask the server once no other thread of this process is asking."""
        while True:
            if self._idle[name]:
                return self._idle[name].pop()
            if name not in self._asking:
                break
            self._lock.wait()
        self._asking.add(name)
        try:
            return self._ask(name, holder)
        finally:
            self._asking.discard(name)
            self._lock.notify_all()  # the next waiting row asks now

    def _ask(self, name: str, holder: Any) -> UUID:
        """Ask the server until it grants a slot; called holding the lock, released while waiting."""
        import httpx

        failing_since: float | None = None
        while True:
            released = self._released[name]
            self._lock.release()
            try:
                response = self._client.increment_concurrency_slots_with_lease(
                    names=[name], slots=1, mode="concurrency", lease_duration=self.lease_duration, holder=holder
                )
                error = None
            except (httpx.HTTPStatusError, httpx.TransportError) as caught:
                error = caught
            finally:
                self._lock.acquire()
            if error is None:
                lease_id = UUID(response.json()["lease_id"])
                self._leases.add(lease_id)
                self._start_renewer()
                return lease_id
            if isinstance(error, httpx.HTTPStatusError) and error.response.status_code == 423:
                failing_since = None
                if self._released[name] != released:
                    continue  # a slot of this process came free while the request was answered
                retry_after = float(error.response.headers.get("Retry-After") or 1.0)
                # Jitter: processes refused together should not all come back together.
                pause = min(MAX_RETRY, max(MIN_RETRY, retry_after)) * random.uniform(0.5, 1.0)
            elif isinstance(error, httpx.HTTPStatusError) and error.response.status_code < 500:
                raise error
            else:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > UNAVAILABLE_FOR:
                    raise error
                logger.warning("render slot: the Prefect API failed (%s); asking again", error)
                pause = UNAVAILABLE_PAUSE * random.uniform(0.5, 1.0)
            # A slot handed over or released meanwhile ends the wait at once.
            self._lock.wait_for(functools.partial(self._freed, name, released), timeout=pause)
            if self._idle[name]:
                return self._idle[name].pop()

    def _freed(self, name: str, released: int) -> bool:
        """A slot was handed over, or this process released one, since ``released`` releases."""
        return bool(self._idle[name]) or self._released[name] != released

    def release(self, name: str, lease_id: UUID) -> None:
        """Give the slot to a row of this process waiting for one, else back to the server."""
        with self._lock:
            if self._waiting[name] > 0:
                self._idle[name].append(lease_id)
                self._lock.notify_all()
                return
            self._leases.discard(lease_id)
        self._release(name, lease_id)

    def _release(self, name: str, lease_id: UUID) -> None:
        try:
            self._client.release_concurrency_slots_with_lease(lease_id)
        except Exception as error:  # the lease runs out by itself; the video must not fail for this
            logger.warning(
                "could not release render slot (lease %s): %s; it frees itself when it expires", lease_id, error
            )
        with self._lock:
            self._released[name] += 1
            self._lock.notify_all()

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


def rows_waiting(name: str) -> int:
    """How many rows of this process are waiting for a slot of ``name`` now (the server refused them so far)."""
    with _holders_lock:
        holders = list(_holders.values())
    return sum(holder.waiting(name) for holder in holders)


@contextmanager
def holding_lease(name: str, *, lease_duration: float) -> Iterator[None]:
    """Hold one slot of the global concurrency limit ``name`` while the block runs."""
    holder = lease_holder(lease_duration)
    lease_id = holder.acquire(name, _current_run())
    try:
        yield
    finally:
        holder.release(name, lease_id)


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
