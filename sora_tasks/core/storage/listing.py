"""What already exists under an S3 prefix, listed once per batch instead of asked per row.

A batch of N rows would otherwise HEAD every row's output before its create to see
whether an earlier run delivered it there. Nearly every answer is "no", and botocore
parses each miss as an error reply. One LIST per process and batch answers all of them:
an output missing from the listing was not there when the batch started, so no lookup is
needed (the row's receipt is still read before its create); one in it is still looked
up (its metadata matters).

A listing is a hint for the first attempt only: another process may write afterwards, so
a retried row asks S3 directly. Listings are kept in a process-wide registry by scope
(the batch's id), like the rendering slots, so the rows that name them stay plain data
for any task runner.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

# Past this many names a listing costs more than the lookups it saves (a prefix that
# holds years of receipts): the batch then looks each row up as before.
MAX_NAMES = 100_000
# Listings of finished batches kept per process (a Dask worker never hears that a batch ended).
KEPT_SCOPES = 8


class Listing:
    """Names present when first listed, plus those this process has written since.

    ``prefix``: what was listed; a name outside it says nothing (see :meth:`rules_out`).
    """

    def __init__(self, names: Iterable[str], prefix: str = "") -> None:
        self._names = set(names)
        self._lock = threading.Lock()
        self.prefix = prefix

    def rules_out(self, name: str) -> bool:
        """True when ``name`` lies under the listed prefix and was not there."""
        return name.startswith(self.prefix) and name not in self

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._names

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)

    def add(self, name: str) -> None:
        with self._lock:
            self._names.add(name)

    def discard(self, name: str) -> None:
        with self._lock:
            self._names.discard(name)


def take_listing(names: Iterable[str], *, prefix: str = "", limit: int = MAX_NAMES) -> Listing | None:
    """A listing of ``names`` (all under ``prefix``), or None when there are more than ``limit``."""
    collected: set[str] = set()
    for name in names:
        collected.add(name)
        if len(collected) > limit:
            return None
    return Listing(collected, prefix)


_registry: OrderedDict[tuple[str, str], Listing | None] = OrderedDict()
_registry_lock = threading.Lock()
_loading: dict[tuple[str, str], threading.Lock] = {}


def shared_listing(scope: str, location: str, load: Callable[[], Listing | None]) -> Listing | None:
    """This process's listing of ``location`` for ``scope``, loaded by the first row that asks.

    The other rows of the batch wait for that one LIST rather than each sending their own.
    """
    key = (scope, location)
    with _registry_lock:
        if key in _registry:
            return _registry[key]
        gate = _loading.setdefault(key, threading.Lock())
    with gate:
        with _registry_lock:
            if key in _registry:
                return _registry[key]
        listing = load()
        with _registry_lock:
            _registry[key] = listing
            _loading.pop(key, None)
            while len({scope for scope, _ in _registry}) > KEPT_SCOPES:
                _registry.popitem(last=False)
        return listing


def forget_listings(scope: str) -> None:
    """Drop a finished batch's listings."""
    with _registry_lock:
        for key in [key for key in _registry if key[0] == scope]:
            del _registry[key]
