"""Transient failures retried with jittered backoff: one rule for reads, downloads and uploads.

Below the pipeline and the quality gate, which both retry storing a file.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import TransientError

logger = logging.getLogger("sora_tasks")
T = TypeVar("T")

TRANSIENT_ATTEMPTS = 4


def retry_transient(action: Callable[[int], T], *, attempts: int = TRANSIENT_ATTEMPTS, what: str) -> T:
    """``action(attempt)`` until it does not raise :class:`TransientError`, with jittered backoff.

    Only transient failures are retried: bad input and failed jobs are final, and a
    create is only ever retried by a caller that reconciles (see :func:`send_job`).
    """
    for attempt in range(1, attempts + 1):
        try:
            return action(attempt)
        except TransientError as error:
            if attempt == attempts:
                raise
            delay = error.retry_after if error.retry_after is not None else min(2.0**attempt, 30.0)
            delay *= 1 + random.uniform(0, 0.5)
            logger.warning(
                "%s failed (%s); retrying in %.1fs (attempt %d of %d)", what, error, delay, attempt, attempts
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
