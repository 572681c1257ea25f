"""Rendering slots: at most N jobs rendering at the provider at once, in one process.

A batch row holds a slot from the moment its create is sent until its job stops
rendering. The slot is claimed right before the paid request, not when the row
starts, so everything before it (task-run bookkeeping, image fitting) overlaps other
jobs' render time and a freed slot is refilled in milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class _Claim:
    slots: threading.BoundedSemaphore
    held: bool = False


@dataclass
class RenderingSlots:
    limit: int
    _semaphore: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        self._semaphore = threading.BoundedSemaphore(self.limit)

    @contextmanager
    def for_job(self) -> Iterator[None]:
        """Scope of one job: a slot claimed inside it is released when it ends."""
        claim = _Claim(self._semaphore)
        token = _current_claim.set(claim)
        try:
            yield
        finally:
            _current_claim.reset(token)
            if claim.held:
                claim.slots.release()


_current_claim: ContextVar[_Claim | None] = ContextVar("sora_rendering_claim", default=None)


def claim_rendering_slot() -> None:
    """Block until this job holds a slot; a no-op outside ``for_job`` or when held already.

    Called right before a create request. A retried create keeps the slot it has.
    """
    claim = _current_claim.get()
    if claim is not None and not claim.held:
        claim.slots.acquire()
        claim.held = True
