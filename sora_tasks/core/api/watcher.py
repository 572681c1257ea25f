"""One status read for many jobs a process waits on: a page of the server's job list,
instead of one retrieve per job per poll interval.

A batch waits on up to ``max_in_flight`` jobs at once. Polling each job on its own
sends one request per job per interval; a page of the newest jobs answers for all of
them at once. That is fewer requests against the provider's rate limits and a
fraction of the CPU (each request costs the same HTTP and parsing work whatever it
carries).

Each job keeps its own schedule, as if it were polled alone: read one interval after
its create answered, then every interval (the server's ``openai-poll-after-ms`` hint
wins over ``poll_interval``), so a job is seen finished about when polling it alone
would see it: a read waits up to two fifths of an interval for other jobs falling due,
which bounds the reads to two or three per interval however many jobs are waited on
(0.7 list pages per video in bench/, against 9 retrieves when each job is polled
alone), and every job on the page hears its news, due or not. A job the pages do not show (an
older one, or a proxy that lists ids in another form) is retrieved on its own; with a
single job waiting, a retrieve is all that is sent.

Each waiting thread blocks until the watcher has news of its job and then handles it
as :meth:`VideosClient.wait` does: progress callback, completed, failed, deadline. A
read that fails reaches the waiters it concerns as the exception a retrieve would
raise, so the callers' retries work unchanged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from openai.types import Video

from ..errors import SoraError, TransientError, VideoTimeoutError
from .client import ProgressCallback, VideosClient, settled

logger = logging.getLogger("sora_tasks")

PAGE_SIZE = 100  # the most the API returns per page
# Pages read per round before the due jobs still missing are retrieved one by one: a
# batch's jobs are the newest on the account unless many others are made beside it.
MAX_PAGES = 3
# How long a due read may wait for others, as a share of the interval: at most 1/share reads per interval.
GATHER_SHARE = 0.4
# List rounds that found none of two or more watched jobs before listing is given up (a
# server that lists ids another way than it answers creates, or lists nothing).
USELESS_ROUNDS = 3
ENDED = ("completed", "failed")


@dataclass
class _Watch:
    """One job's schedule and what its waiters are told: the latest answer or error, numbered so none is missed."""

    due: float
    waiters: int = 0
    version: int = 0
    video: Video | None = None
    error: Exception | None = None
    # Completed, failed or errored: its waiters are leaving; later rounds skip it.
    finished: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)

    def tell(self, video: Video | None = None, error: Exception | None = None) -> None:
        with self.changed:
            self.video, self.error = video, error
            self.version += 1
            self.finished = error is not None or (video is not None and video.status in ENDED)
            self.changed.notify_all()


class JobWatcher:
    """Waits on many jobs of one server with shared reads (see the module doc).

    ``client`` is used by the watcher's own thread only.
    """

    def __init__(self, client: VideosClient, *, poll_interval: float) -> None:
        self._client = client
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # a new job may fall due before the next read
        self._watched: dict[str, _Watch] = {}
        self._thread: threading.Thread | None = None
        self._can_list = client.profile.supports_list
        self._useless_rounds = 0
        self._hint: float | None = None

    @property
    def _interval(self) -> float:
        return self._hint if self._hint is not None else self._poll_interval

    def wait(self, video_id: str, *, max_wait: float, on_progress: ProgressCallback | None = None) -> Video:
        """Block until ``video_id`` completes (returned), fails (``job_error``) or ``max_wait`` passes."""
        started = time.monotonic()
        watch = self._register(video_id)
        seen = 0
        try:
            while True:
                with watch.changed:
                    while watch.version == seen:
                        left = started + max_wait - time.monotonic()
                        if left <= 0:
                            last = watch.video
                            raise VideoTimeoutError(
                                video_id,
                                time.monotonic() - started,
                                str(last.status) if last else "unknown",
                                last.progress if last else None,
                            )
                        watch.changed.wait(left)
                    seen, video, error = watch.version, watch.video, watch.error
                if error is not None:
                    raise error
                if video is not None and (done := settled(video, on_progress)) is not None:
                    return done
        finally:
            self._unregister(video_id)

    def _register(self, video_id: str) -> _Watch:
        with self._lock:
            watch = self._watched.get(video_id)
            if watch is None or watch.finished:
                # First read one interval on: right after the create it could only say "queued".
                watch = self._watched[video_id] = _Watch(due=time.monotonic() + self._interval)
            watch.waiters += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sora-job-watcher", daemon=True)
                self._thread.start()
            self._wake.notify()
            return watch

    def _unregister(self, video_id: str) -> None:
        with self._lock:
            watch = self._watched.get(video_id)
            if watch is not None:
                watch.waiters -= 1
                if watch.waiters <= 0:
                    del self._watched[video_id]

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if not self._watched:
                        self._thread = None  # the next waiter starts a new thread
                        return
                    watched = {video_id: w for video_id, w in self._watched.items() if not w.finished}
                    now = time.monotonic()
                    gather = GATHER_SHARE * self._interval
                    start = min((w.due for w in watched.values()), default=now + gather) + gather
                    if start <= now:
                        break
                    self._wake.wait(start - now)
            due = {video_id for video_id, watch in watched.items() if watch.due <= now}
            try:
                self._read(watched, due)
            except Exception as error:  # never let the thread die with waiters blocked on it
                logger.warning("status read failed: %s", error)
                for video_id in due:
                    watched[video_id].tell(error=error if isinstance(error, SoraError) else TransientError(str(error)))
            interval = self._interval
            for video_id in due:
                watch = watched[video_id]
                while watch.due <= now:  # the job's own schedule, however late this read was
                    watch.due += interval

    def _read(self, watched: dict[str, _Watch], due: set[str]) -> None:
        """News of the due jobs (and of any other the list shows ended): from the list where it
        shows them, else one retrieve each."""
        missing = set(due)
        if len(watched) > 1 and self._can_list:
            for video in self._listed(watched, due, missing):
                watched[video.id].tell(video)
        for video_id in missing:
            try:
                video, hint = self._client.retrieve(video_id)
            except SoraError as error:
                watched[video_id].tell(error=error)
            else:
                self._hint = hint if hint is not None else self._hint  # a finished job's answer has none
                watched[video_id].tell(video)

    def _listed(self, watched: Mapping[str, _Watch], due: set[str], missing: set[str]) -> list[Video]:
        """The due jobs the newest pages show, and the others they show ended; ``missing`` keeps
        the due jobs not found."""

        def wanted(item: Mapping[str, Any]) -> bool:
            return item.get("id") in due or (item.get("id") in watched and item.get("status") in ENDED)

        # The jobs waited on are among the newest: a page a little longer than their
        # number finds them unless other clients are creating many jobs meanwhile.
        limit = min(PAGE_SIZE, 2 * len(watched) + 8)
        found: list[Video] = []
        after: str | None = None
        try:
            for _ in range(MAX_PAGES):
                page, after, hint = self._client.list_recent(after=after, limit=limit, wanted=wanted)
                self._hint = hint if hint is not None else self._hint
                for video in page:
                    missing.discard(video.id)
                    found.append(video)
                if not missing or after is None:
                    break
                limit = PAGE_SIZE
        except SoraError as error:
            # The due jobs are retrieved one by one this round; the SDK has retried the list already.
            logger.info("listing jobs failed (%s); reading each job", error)
            return found
        self._useless_rounds = 0 if len(missing) < len(due) else self._useless_rounds + 1
        if missing and self._useless_rounds >= USELESS_ROUNDS:
            logger.info("the server's job list does not show the jobs waited on; reading each job instead")
            self._can_list = False
        return found


_watchers: dict[Hashable, JobWatcher] = {}
_watchers_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked child has none of the parent's threads (or its lock holders): it starts afresh.
    global _watchers_lock
    _watchers.clear()
    _watchers_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def shared_watcher(key: Hashable, make_client: Callable[[], VideosClient], *, poll_interval: float) -> JobWatcher:
    """The process's watcher for ``key`` (a server, key and client settings), made on first use."""
    with _watchers_lock:
        watcher = _watchers.get(key)
        if watcher is None:
            watcher = _watchers[key] = JobWatcher(make_client(), poll_interval=poll_interval)
        return watcher
