"""Claims: the one run that may pay for a request, decided before the paid call.

A receipt is written when a create answers; two runs that both read "no receipt" in the
moment before would both pay. So before any paid call the run writes a claim for the
request's receipt key with a conditional create: S3's ``put_object(IfNoneMatch="*")``
(a second such put answers ``PreconditionFailed``, on S3, MinIO and moto alike) beside the
receipts, or an exclusive create (``os.link``, which fails if the name exists) in a local
receipts folder. The run whose put succeeds pays and records the receipt; every other run
follows the winner's job once its receipt appears and never pays.

A claim names its owner (host, process, its start time, the Prefect flow run if any). A
claim with no receipt after a while whose owner is known to be gone (a dead process on
this host, a flow run that ended or crashed), or that is older than any create could take
(:data:`STALE_AFTER`), is taken over: the next generation of the claim is created the same
conditional way, so of two runs taking over, one wins. The new owner first looks for a job
the dead owner may have made after all (the caller reconciles from the claim's time).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .destinations import S3Client
from .records import RecordStore

# A claim whose owner cannot be checked and that has had no receipt for this long is taken
# over: a create answers within its request timeout (60 s) and a few reconcile reads.
STALE_AFTER = 180.0
# How often a run that lost a claim looks for the winner's receipt.
FOLLOW_POLL = 0.25
# The most generations of one claim (takeovers) probed before giving up.
MAX_GENERATIONS = 50

# Set by the Prefect layer (sora_tasks.tasks): the current flow run's id, and whether a
# flow run is over. The core cannot ask Prefect itself.
_describe_run: Callable[[], str | None] = lambda: None  # noqa: E731
_run_is_over: Callable[[str], bool | None] = lambda run_id: None  # noqa: E731


def register_runs(describe: Callable[[], str | None], is_over: Callable[[str], bool | None]) -> None:
    """Let claims name the flow run that owns them and ask whether another one is over."""
    global _describe_run, _run_is_over
    _describe_run, _run_is_over = describe, is_over


def _process_started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not mistaken for it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class ClaimOwner:
    host: str
    pid: int
    started: str | None
    flow_run_id: str | None
    token: str

    @classmethod
    def here(cls) -> ClaimOwner:
        pid = os.getpid()
        # The token tells this claim from another of the same process (two batch rows in two threads).
        return cls(socket.gethostname(), pid, _process_started(pid), _describe_run(), uuid.uuid4().hex)

    def is_gone(self) -> bool | None:
        """True when the owner is known to have stopped, False when known alive, None when unknown."""
        if self.host == socket.gethostname():
            if not Path("/proc/self/stat").exists():  # no /proc: only whether the pid exists
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    return True
                except PermissionError:
                    return False
                return False
            started = _process_started(self.pid)
            if started is None:
                return True
            return self.started is not None and started != self.started
        if self.flow_run_id:
            return _run_is_over(self.flow_run_id)
        return None


@dataclass(frozen=True)
class Claim:
    """Who may pay for ``key`` (generation ``generation`` of its claim), and since when."""

    key: str
    generation: int
    owner: ClaimOwner
    created_at: float
    # When this claim took over an orphaned one: that one's time (its owner may have paid after it).
    took_over_at: float | None = None
    # Once its owner has paid: the receipt it recorded (JSON), so the claim answers for the job
    # even when the receipt itself is gone.
    fulfilled: str | None = None

    @property
    def name(self) -> str:
        return claim_name(self.key, self.generation)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Claim:
        data = json.loads(text)
        took_over_at = data.get("took_over_at")
        fulfilled = data.get("fulfilled")
        return cls(
            data["key"],
            int(data["generation"]),
            ClaimOwner(**data["owner"]),
            float(data["created_at"]),
            None if took_over_at is None else float(took_over_at),
            fulfilled if isinstance(fulfilled, str) else None,
        )

    def orphaned(self, now: float) -> bool:
        """Its owner is known gone, or it is older than any create could take (and nothing tells otherwise).

        A fulfilled claim is never orphaned: its job exists and is followed.
        """
        if self.fulfilled is not None:
            return False
        gone = self.owner.is_gone()
        return gone is True or (gone is None and now - self.created_at > STALE_AFTER)


def claim_name(key: str, generation: int) -> str:
    return key if generation == 0 else f"{key}~{generation}"


class Claims:
    """The claims beside a receipts location: ``<receipts>/claims/``."""

    def __init__(self, receipts_location: str, client: S3Client | None = None) -> None:
        self.location = f"{receipts_location.rstrip('/')}/claims"
        self._store = RecordStore(self.location, client, what="claims")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Claims({self.location!r})"

    def take(self, key: str, *, after: str | None = None) -> tuple[bool, Claim]:
        """Claim ``key`` for this process: (True, ours) if this run may pay, else (False, the holder's).

        ``after``: the id of a job the receipt named that is gone or unusable; replacing it
        is claimed under its own name, so the claim that made it does not stand in the way.
        """
        base = key if after is None else f"{key}-after-{after.replace('/', '_')}"
        generation, orphan_at = 0, None
        while generation < MAX_GENERATIONS:
            claim = Claim(base, generation, ClaimOwner.here(), time.time(), orphan_at)
            if self._store.put_new(claim.name, claim.to_json()):
                return True, claim
            held = self._read(base, generation)
            if held is None:
                continue  # released between our put and our read: try the same generation again
            if not held.orphaned(time.time()):
                return False, held
            # Take over: the next generation, created the same conditional way.
            generation, orphan_at = generation + 1, held.created_at
        raise RuntimeError(f"claim {base} has been taken over {MAX_GENERATIONS} times; giving up")

    def fulfil(self, claim: Claim, receipt_json: str) -> None:
        """Mark our claim paid: it keeps the receipt, so it answers for the job even if the receipt is lost."""
        self._store.put(claim.name, replace(claim, fulfilled=receipt_json).to_json())

    def release(self, claim: Claim) -> None:
        """Give a claim back (nothing was paid under it): the next run may pay at once."""
        self._store.delete(claim.name)

    def current(self, claim: Claim) -> Claim | None:
        """The newest generation of ``claim``'s name that exists (a takeover's), else None."""
        newest = None
        for generation in range(claim.generation, claim.generation + MAX_GENERATIONS):
            found = self._read(claim.key, generation)
            if found is None:
                break
            newest = found
        return newest

    def _read(self, key: str, generation: int) -> Claim | None:
        text = self._store.get(claim_name(key, generation))
        if text is None:
            return None
        try:
            return Claim.from_json(text)
        except (ValueError, KeyError, TypeError):
            # Not a claim we can read: treated as held by nobody we can check, so it goes stale.
            return Claim(key, generation, ClaimOwner("?", 0, None, None, "?"), 0.0)
