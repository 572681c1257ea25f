"""A process-local progress feed: the wait loop publishes, a CLI or app listens.

Flow parameters cannot carry callables, so a progress bar in the process that runs
the flow subscribes here instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Listener = Callable[[Any], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Receive every polled video status in this process; returns an unsubscribe function."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def publish(video: Any) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(video)
