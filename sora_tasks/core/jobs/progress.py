"""Process-local feeds: the wait loop (or a review) publishes, a CLI or app listens.

Flow parameters cannot carry callables, so a progress bar in the process that runs
the flow subscribes here instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Feed(Generic[T]):
    """Listeners of one kind of message in this process, called in the publisher's thread."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[T], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Callable[[T], None]) -> Callable[[], None]:
        """Receive every message published here; returns an unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def publish(self, message: T) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(message)


# Every polled video status.
_statuses: Feed[Any] = Feed()
subscribe = _statuses.subscribe
publish = _statuses.publish
