"""Slots of a Prefect global concurrency limit, held on leases through one client per process.

The account's render limit is a Prefect global concurrency limit: a row holds one slot
while its job renders, on a lease the server frees by itself if the holder dies. Prefect's
own ``concurrency()`` context manager does this correctly but slowly for hundreds of
holders in one process (``bench/gcl_probe.py``): it queues every acquisition through one
service that sleeps out each refusal before trying the next, builds a new client (with
its own TLS context) for each release and starts a renewal thread, with a client of its
own, for each held slot. Here one long-lived client per process does every request and
one thread renews every lease this process holds.

A slot a row gives back is kept for a moment (``LINGER`` seconds) for the next row of
this process, lease and all, instead of being released and asked for again: a refused
request waits out the server's Retry-After, so a release followed by an acquire left the
slot idle for up to seconds (a 200-row batch on a 20-slot limit took 38 s in one process
against 24 s without the limit) and, across several shard processes, every waiting row
asked the server again and again (a 4-shard batch drew 503s from a SQLite-backed server).
A row already waiting takes it at once; the next row of a batch is usually a few
milliseconds behind (it reads its receipt first), and a slot nobody here takes within
``LINGER`` goes back to the server. Only one thread per process and limit asks the
server at a time; the others wait for it or for a handed-over slot. A handed-over lease
keeps the holder Prefect recorded when it was taken (the first row's task run, or the
flow run for a slot reserved ahead).

A spread batch takes rows only with a slot in hand (:meth:`LimitSlots.reserve`): a slot is taken
first, then the next row, which finds it kept under its name (:func:`holding_lease`'s
``reserved``). So no row waits in a process that has no slot while another process has
slots and no rows; a process that gets no slot takes no rows and leaves them to those that do.

The requests are Prefect's (``increment-with-lease``, ``leases/{id}/renew``,
``decrement-with-lease``), so the server's view of the limit is the same.
"""

from __future__ import annotations

import atexit
import functools
import logging
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
# How long a slot given back stays with this process for its next row before it is
# released to the server: long enough for a batch's next row to read its receipt and ask,
# short beside a render, so another process waiting for the slot loses little.
LINGER = 0.5


class LeaseHolder:
    """Every lease this process holds on one Prefect API, and the threads that renew and give them back."""

    def __init__(self, lease_duration: float) -> None:
        from prefect.client.orchestration import get_client

        self.lease_duration = lease_duration
        self._client: Any = get_client(sync_client=True)
        self._client.__enter__()  # lives as long as the process: one connection pool, one TLS context
        self._leases: set[UUID] = set()  # every lease held, in use, reserved or idle: all are renewed
        self._held: Counter[str] = Counter()  # leases held per limit, in use, reserved or idle
        # Given back and kept for this process's next row, each with the time it goes back to the server.
        self._idle: defaultdict[str, list[tuple[UUID, float]]] = defaultdict(list)
        self._asking: set[str] = set()  # limits a thread of this process is asking the server for now
        # Releases of this process the server has finished, per limit: a refusal that crossed
        # one is asked again at once, not after the server's Retry-After.
        self._released: Counter[str] = Counter()
        self._lock = threading.Condition()
        self._renewer: threading.Thread | None = None
        self._releaser: threading.Thread | None = None
        atexit.register(self.release_idle)  # a process that ends leaves no kept slot held to its lease's end

    def acquire(self, name: str, holder: Any = None, *, patience: float | None = None) -> UUID | None:
        """One slot of ``name``: one this process gives back, or one from the server.

        ``holder`` (a ``ConcurrencyLeaseHolder``) names the run the UI shows holding the slot.
        ``patience``: seconds to wait at most (None: until granted); None when none came in time.
        """
        deadline = None if patience is None else time.monotonic() + patience
        with self._lock:
            return self._take_or_ask(name, holder, deadline)

    def read_limit(self, name: str) -> Any:
        """The limit as the server has it (``limit``, ``active_slots``)."""
        return self._client.read_global_concurrency_limit_by_name(name)

    def in_use(self, name: str) -> int:
        """Slots of ``name`` this process holds and does not keep idle: rendering rows' and reserved ones."""
        with self._lock:
            return self._held[name] - len(self._idle[name])

    def _take_or_ask(self, name: str, holder: Any, deadline: float | None) -> UUID | None:
        """A handed-over slot, else ask the server once no other thread of this process is asking."""
        while True:
            if self._idle[name]:
                return self._idle[name].pop()[0]
            if name not in self._asking:
                break
            if not self._lock.wait(timeout=_left(deadline)) and _left(deadline) == 0:
                return None
        self._asking.add(name)
        try:
            return self._ask(name, holder, deadline)
        finally:
            self._asking.discard(name)
            self._lock.notify_all()  # the next waiting row asks now

    def _ask(self, name: str, holder: Any, deadline: float | None) -> UUID | None:
        """Ask the server until it grants a slot (or ``deadline``); called holding the lock, released while waiting."""
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
                self._held[name] += 1
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
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            # A slot handed over or released meanwhile ends the wait at once.
            self._lock.wait_for(functools.partial(self._freed, name, released), timeout=pause)
            if self._idle[name]:
                return self._idle[name].pop()[0]
            if deadline is not None and _left(deadline) == 0:
                return None

    def _freed(self, name: str, released: int) -> bool:
        """A slot was handed over, or this process released one, since ``released`` releases."""
        return bool(self._idle[name]) or self._released[name] != released

    def release(self, name: str, lease_id: UUID) -> None:
        """Give the slot to a row of this process waiting for one, or keep it ``LINGER`` seconds for the
        next; then it goes back to the server."""
        with self._lock:
            self._idle[name].append((lease_id, time.monotonic() + LINGER))
            self._lock.notify_all()
            if self._releaser is None or not self._releaser.is_alive():
                self._releaser = threading.Thread(
                    target=self._release_lingering, name="sora-lease-releaser", daemon=True
                )
                self._releaser.start()

    def release_idle(self, name: str | None = None) -> None:
        """Give every slot kept for this process's next row (of ``name``, or of every limit) back to the server now."""
        with self._lock:
            names = [name] if name is not None else list(self._idle)
            freed = [(each, lease_id) for each in names for lease_id, _ in self._idle.pop(each, [])]
            self._forget(freed)
        for each, lease_id in freed:
            self._release(each, lease_id)

    def _forget(self, leases: list[tuple[str, UUID]]) -> None:
        """No longer held here (called holding the lock): about to go back to the server."""
        for name, lease_id in leases:
            self._leases.discard(lease_id)
            self._held[name] -= 1

    def _release_lingering(self) -> None:
        """Give back each kept slot nobody here took within ``LINGER``; ends once none is kept."""
        while True:
            with self._lock:
                now = time.monotonic()
                due = [(name, lease_id) for name, kept in self._idle.items() for lease_id, at in kept if at <= now]
                for name, lease_id in due:
                    self._idle[name] = [(kept, at) for kept, at in self._idle[name] if kept != lease_id]
                self._forget(due)
                later = [at for kept in self._idle.values() for _, at in kept]
                if not due and not later:
                    self._releaser = None
                    return
            for name, lease_id in due:
                self._release(name, lease_id)
            if not due:
                time.sleep(max(0.0, min(later) - time.monotonic()) + 0.005)

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


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (never below 0), None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


_holders: dict[tuple[str, float], LeaseHolder] = {}
_holders_lock = threading.Lock()
# Slots taken ahead for a row, by the row's key: (limit, lease, its holder).
_reserved: dict[str, tuple[str, UUID, LeaseHolder]] = {}


def lease_holder(lease_duration: float) -> LeaseHolder:
    """This process's holder for the Prefect API configured now (a test may switch servers)."""
    from prefect.settings import PREFECT_API_URL

    key = (str(PREFECT_API_URL.value()), lease_duration)
    with _holders_lock:
        if key not in _holders:
            _holders[key] = LeaseHolder(lease_duration)
        return _holders[key]


@dataclass(frozen=True)
class LimitSlots:
    """One global concurrency limit's slots as this process uses them, for rows taken only with a slot in hand."""

    name: str
    lease_duration: float

    def in_use(self) -> int:
        """Slots this process uses or has reserved (kept idle ones not counted)."""
        return lease_holder(self.lease_duration).in_use(self.name)

    def free(self) -> int:
        """Slots of the limit nobody holds now, as the server counts them."""
        found = lease_holder(self.lease_duration).read_limit(self.name)
        return max(0, int(found.limit) - int(found.active_slots))

    def reserve(self, *, patience: float) -> UUID | None:
        """A slot taken ahead, within ``patience`` seconds, for a row not chosen yet (see :meth:`assign`)."""
        return lease_holder(self.lease_duration).acquire(self.name, _current_run(), patience=patience)

    def assign(self, lease_id: UUID, key: str) -> None:
        """The reserved slot ``lease_id`` is for the row ``key``: its :func:`holding_lease` takes it."""
        holder = lease_holder(self.lease_duration)
        with _holders_lock:
            _reserved[key] = (self.name, lease_id, holder)

    def unreserve(self, lease_id: UUID) -> None:
        """A reserved slot no row takes: kept a moment for this process's next row, then given back."""
        lease_holder(self.lease_duration).release(self.name, lease_id)

    def release_kept(self) -> None:
        """Slots kept for this process's next row go back to the server now (a batch is over)."""
        with _holders_lock:
            holders = list(_holders.values())
        for holder in holders:
            holder.release_idle(self.name)


def release_reserved(key: str) -> None:
    """The row ``key`` is over: a slot reserved for it and not taken goes to this process's next row."""
    with _holders_lock:
        found = _reserved.pop(key, None)
    if found is not None:
        name, lease_id, holder = found
        holder.release(name, lease_id)


@contextmanager
def holding_lease(name: str, *, lease_duration: float, reserved: str | None = None) -> Iterator[None]:
    """Hold one slot of the global concurrency limit ``name`` while the block runs.

    ``reserved``: the row's key; a slot reserved for it (:func:`assign`) is used instead of asking.
    """
    holder = lease_holder(lease_duration)
    with _holders_lock:
        found = _reserved.pop(reserved, None) if reserved is not None else None
    if found is not None and found[0] != name:  # reserved under another limit (the settings changed)
        found[2].release(found[0], found[1])
        found = None
    lease_id = found[1] if found is not None else holder.acquire(name, _current_run())
    holder = found[2] if found is not None else holder
    assert lease_id is not None  # without patience, acquire waits until it has one
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
