"""Sweeping the ledger: each record delivered, still rendering, failed, rejected, expired, missing or kept to retry.

The ``collect-pending`` flow and ``sora-video pending`` share this, so a record means the
same thing whichever engine sweeps it. Only a delivered, failed, rejected, expired or
missing job leaves the ledger; anything else stays for the next sweep. A *rejected* job
failed the quality check: it is kept beside its output (``x.rejected.mp4``, named in the
row), never delivered to it, and its record goes, so no later sweep delivers it as good.

:func:`sweep` runs records on a bounded pool of threads: a finished video's assets live
about an hour, and one at a time a sweep of thousands would outlast them.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..api.settings import close_thread_clients
from ..errors import (
    InvalidRequestError,
    SoraError,
    UntrustedRecordError,
    VideoExpiredError,
    VideoJobError,
    VideoNotReadyError,
    VideoQualityError,
)
from ..ids import is_safe_id
from ..storage.destinations import render_template, split_s3_uri
from ..storage.ledger import Ledger, PendingVideo
from ..text import shown
from .manifest import check_output_inside

logger = logging.getLogger("sora_tasks")

# Outcomes that end a record's life in the ledger.
FINAL_OUTCOMES = ("delivered", "failed", "rejected", "expired", "missing")
# Outcomes a caller should treat as a failed delivery (the job is lost or broken).
FAILED_OUTCOMES = ("failed", "rejected", "expired", "missing")
# Records delivered at once. Each is a status read, a download and an upload, all
# waiting on the network (an hour's worth of finished jobs must be delivered within
# the hour). Measured with collect-pending, S3 ledger into moto S3, on two cores that
# the emulator, moto and the Prefect server share: one thread 17 videos/s, 16 threads
# 40-53/s (bench/run.py --parts sweep), limited by those cores; against a remote API,
# where each request waits longer, threads help more. The flow's earlier loop, one
# video at a time as two task runs: 7/s.
DEFAULT_WORKERS = 16

Row = dict[str, Any]
# The project's own state (receipts, claims, the ledger) lives under this folder name.
STATE_FOLDER_NAME = ".prefect-sora"


@dataclass(frozen=True)
class SweepScope:
    """What a sweep may do with a ledger record: records are data, never configuration.

    A record never chooses the server the key goes to: it names a saved block (trusted
    configuration, the caller loads it) or it is for ``base_url``, the sweep's own server;
    a record for any other server is skipped and reported, never contacted. Its output
    must lie inside ``outputs`` (a folder or ``s3://`` prefix) when given; otherwise, for a
    shared ``s3://`` ledger, inside the ledger's bucket (or the bucket and folder of the
    saved S3Bucket block the record names: ``block_root``), never a local file on the
    sweeping worker; a local ledger's records are its owner's own. Never inside the
    project's state (``.prefect-sora/``).
    """

    base_url: str
    ledger: str
    outputs: str | None = None

    def admit(self, record: PendingVideo, *, block_root: str | None = None) -> None:
        """Raise :class:`UntrustedRecordError` unless the sweep may deliver ``record``."""
        if not record.api_block and record.base_url and not _same_server(record.base_url, self.base_url):
            raise UntrustedRecordError(
                f"recorded for the server {shown(record.base_url)}; this sweep calls {self.base_url}: "
                "not contacted (sweep it with that server's settings, or record it with a saved VideosApi block)"
            )
        self.check_output(record.output, block_root=block_root)

    def check_output(self, output: str, *, block_root: str | None = None) -> None:
        if any(ord(char) < 32 for char in output):
            raise UntrustedRecordError(f"output {shown(output)} holds control characters")
        try:
            shape = render_template(output, video_id="video_x", model="m")
        except InvalidRequestError as error:
            raise UntrustedRecordError(f"output {shown(output)}: {error}") from None
        if STATE_FOLDER_NAME in shape.replace("\\", "/").split("/"):
            raise UntrustedRecordError(f"output {shown(output)} is inside the project's state ({STATE_FOLDER_NAME}/)")
        roots = [self.outputs] if self.outputs else self._default_roots(block_root)
        if roots is None:
            return
        refusals = []
        for root in roots:
            try:
                check_output_inside(output, root, model="m")
                return
            except InvalidRequestError as error:
                refusals.append(str(error))
        given = " or ".join(shown(root) for root in roots) if roots else "nothing local"
        raise UntrustedRecordError(
            f"output {shown(output)} is outside what this sweep writes ({given}; pass outputs=... to allow it): "
            + "; ".join(refusals[:1])
        )

    def _default_roots(self, block_root: str | None) -> list[str] | None:
        """None: anywhere (a local ledger is its owner's). Else the roots an S3 ledger's records may write in."""
        if not self.ledger.startswith("s3://"):
            return None
        bucket, _ = split_s3_uri(self.ledger)
        return [f"s3://{bucket}/", *([block_root] if block_root else [])]


def _same_server(recorded: str, ours: str) -> bool:
    return recorded.strip().rstrip("/") == ours.strip().rstrip("/")


def sweep_record(record: PendingVideo, ledger: Ledger, deliver: Callable[[PendingVideo], str]) -> Row:
    """Try to deliver one record with ``deliver`` (which returns the stored URI); one outcome row.

    Any error other than the job's own outcome keeps the record for the next sweep (a
    ``retry`` row naming the error): one bad record never stops the others.
    """
    row: Row = {"video_id": record.video_id, "output": record.output, "reason": record.reason}
    try:
        uri = deliver(record)
    except VideoExpiredError as error:
        row.update(outcome="expired", detail=str(error))
    except VideoNotReadyError as error:
        if error.status == "not_found":
            row.update(outcome="missing", detail=str(error))
        else:
            row.update(outcome="rendering", detail=error.status)
    except VideoJobError as error:
        row.update(outcome="failed", detail=f"{error.code}: {error.message}", code=error.code)
    except VideoQualityError as error:
        # Final: checking it again would reject it again, and it must never reach the output.
        kept = f"; kept at {error.rejected_uri}" if error.rejected_uri else ""
        checks = "; ".join(f"{name}: {detail}" for name, detail in error.checks.items())
        row.update(outcome="rejected", detail=f"{error.code}: {checks}{kept}", code=error.code)
        row["rejected_uri"] = error.rejected_uri
    except UntrustedRecordError as error:
        row.update(outcome="skipped", detail=str(error))  # kept: it may be another sweep's to deliver
    except SoraError as error:
        row.update(outcome="retry", detail=str(error))  # kept: the next sweep tries again
    except Exception as error:
        logger.warning("sweeping %s failed unexpectedly; kept for the next sweep", record.video_id, exc_info=True)
        row.update(outcome="retry", detail=f"{type(error).__name__}: {error}")
    else:
        row.update(outcome="delivered", detail=uri)
    if row["outcome"] in FINAL_OUTCOMES:
        try:
            ledger.forget(record.video_id)
        except Exception as error:  # the outcome stands; the next sweep meets the record again
            logger.warning("could not remove %s from %s", record.video_id, ledger.location, exc_info=True)
            row["detail"] = f"{row['detail']} (record not removed: {type(error).__name__}: {error})"
    return row


def sweep(
    ledger: Ledger,
    deliver: Callable[[PendingVideo], str],
    *,
    workers: int = DEFAULT_WORKERS,
    limit: int | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Sweep ``ledger`` with ``workers`` threads; one row per record looked at, in listing order.

    The ledger is listed as the workers ask for more (S3 a page at a time) and each
    worker reads, delivers and, once final, removes one record at a time, so a ledger of
    any size is swept without being read first. A record gone when a worker reads it
    (another sweep took it) is skipped. ``limit`` caps the records looked at (None: all).
    ``on_row`` is called in the caller's thread as each row is ready, in the order they
    finish. ``deliver`` runs in the worker threads, each with a copy of the caller's
    context variables; clients kept by :meth:`ApiSettings.client` there are closed as
    the sweep ends.

    A failure to list the ledger stops the sweep: the workers finish the records they
    hold, then it is raised.
    """
    if workers < 1:
        raise InvalidRequestError(f"workers must be at least 1, got {workers}")
    if limit is not None and limit < 0:
        raise InvalidRequestError(f"limit must be at least 0 (or None for no limit), got {limit}")
    if limit == 0:
        return []
    threads = workers if limit is None else min(workers, limit)
    names = ledger.video_ids()
    lock = threading.Lock()
    stop = threading.Event()
    taken = 0  # records handed to a worker, less those found gone: what `limit` counts
    position = 0  # listing order, for the rows returned
    # A worker puts (position, row) for each record, then None once it ends.
    ready: queue.Queue[tuple[int, Row] | None] = queue.Queue()

    def take() -> tuple[int, str] | None:
        nonlocal taken, position
        with lock:  # a generator must not be advanced by two threads at once
            if stop.is_set() or (limit is not None and taken >= limit):
                return None
            name = next(names, None)
            if name is None:
                return None
            taken += 1
            position += 1
            return position, name

    def gone() -> None:
        nonlocal taken
        with lock:
            taken -= 1  # this thread goes on taking, so the place freed under `limit` is used

    def work() -> None:
        try:
            while (item := take()) is not None:
                number, video_id = item
                row = _sweep_one(ledger, video_id, deliver)
                if row is None:
                    gone()
                else:
                    ready.put((number, row))
        except BaseException:
            stop.set()
            raise
        finally:
            close_thread_clients()
            ready.put(None)

    rows: list[tuple[int, Row]] = []
    with ThreadPoolExecutor(threads, thread_name_prefix="sora-sweep") as pool:
        # Each worker its own copy: one context cannot be entered by two threads at once.
        futures = [pool.submit(contextvars.copy_context().run, work) for _ in range(threads)]
        try:
            running = threads
            while running:
                item = ready.get()
                if item is None:
                    running -= 1
                    continue
                rows.append(item)
                if on_row is not None:
                    on_row(item[1])
        except BaseException:
            stop.set()  # the workers finish the records they hold and take no more
            raise
    for future in futures:
        future.result()  # a listing failure, raised here once every worker has stopped
    rows.sort(key=lambda item: item[0])
    return [row for _, row in rows]


def _sweep_one(ledger: Ledger, video_id: str, deliver: Callable[[PendingVideo], str]) -> Row | None:
    """The row for one listed record; None when it is gone (another sweep delivered it)."""
    try:
        record = ledger.get(video_id)
    except ValueError as error:  # not a record, an unsafe id: kept, shown, never acted on
        detail = f"record not trusted: {error}"
        name = video_id if is_safe_id(video_id) else shown(video_id)
        return {"video_id": name, "output": "", "reason": "", "outcome": "skipped", "detail": detail}
    except Exception as error:  # unreadable: kept, and shown, rather than stopping the sweep
        logger.warning("ledger record %s unreadable; kept for the next sweep", video_id, exc_info=True)
        detail = f"record unreadable: {type(error).__name__}: {error}"
        return {"video_id": video_id, "output": "", "reason": "", "outcome": "retry", "detail": detail}
    if record is None:
        return None
    return sweep_record(record, ledger, deliver)


def summary(rows: list[Row]) -> str:
    """``2 delivered, 1 still rendering, 0 failed`` — every outcome seen, in a fixed order."""
    names = {"rendering": "still rendering", "retry": "to retry", "skipped": "skipped (not this sweep's)"}
    order = ("delivered", "rendering", "retry", "skipped", "failed", "rejected", "expired", "missing")
    counts = {outcome: sum(1 for row in rows if row["outcome"] == outcome) for outcome in order}
    return ", ".join(f"{count} {names.get(outcome, outcome)}" for outcome, count in counts.items() if count)
