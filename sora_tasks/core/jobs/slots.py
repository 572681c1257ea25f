"""Rendering slots in one process: at most N jobs of one batch rendering at once here.

The account-wide bound is a Prefect global concurrency limit (``render_limit_name``);
this is the per-process cap (a batch's ``max_in_flight``). Slots are looked up by a key
(the batch's id) in a process-wide registry rather than passed around, so the rows that
carry the key stay plain data that any task runner (threads, Dask processes) can ship.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_registry: dict[str, threading.BoundedSemaphore] = {}
_registry_lock = threading.Lock()


def _slots(key: str, limit: int) -> threading.BoundedSemaphore:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    with _registry_lock:
        if key not in _registry:
            _registry[key] = threading.BoundedSemaphore(limit)
        return _registry[key]


@contextmanager
def holding_slot(key: str, limit: int) -> Iterator[None]:
    """Hold one of ``limit`` slots named ``key`` in this process while the block runs."""
    slots = _slots(key, limit)
    slots.acquire()
    try:
        yield
    finally:
        slots.release()


def forget(key: str) -> None:
    """Drop a finished batch's slots."""
    with _registry_lock:
        _registry.pop(key, None)
