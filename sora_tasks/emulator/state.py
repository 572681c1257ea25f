"""Jobs, their lifecycle clock, and the request log of one emulator instance."""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .faults import FaultPlan
from .render import RenderedAssets, render_from_source, render_job
from .workers import stop_processes, watch_parent

# Share of the render time a job spends "queued" before it starts "in_progress".
QUEUED_SHARE = 0.1
# The requests that make a (paid) video job, by endpoint name; each job counts in
# `jobs_created` and in `jobs_created:<kind>`.
JOB_KINDS = ("create", "remix", "edit", "extend")


@dataclass
class EmulatorConfig:
    render_seconds: float = 2.0
    poll_after_ms: int = 500
    asset_ttl_seconds: float = 3600.0
    pad_bytes: int = 0
    api_key: str | None = None
    request_log: Path | None = None
    render_workers: int = max(1, os.cpu_count() or 1)
    # Load tests and benchmarks: render once per (size, seconds, kind) and serve that
    # file to every such job, so hundreds of jobs cost one encode each.
    reuse_renders: bool = False
    # Answer every videos endpoint as OpenAI's host does once the Sora API is shut down:
    # 404 "Invalid URL (POST /v1/videos)". Files keep working.
    hosted_shutdown: bool = False
    # How long create may take to fetch an input_reference {"image_url": "http(s)://..."}.
    fetch_timeout_seconds: float = 5.0


@dataclass
class Job:
    id: str
    model: str
    prompt: str
    seconds: str
    size: str
    created_at: float
    render: Future[RenderedAssets]
    reference: bytes | None = None
    remixed_from: str | None = None
    moderated: bool = False
    rendered_at: float | None = None
    # One of JOB_KINDS; `source` is the video id an edit or extension was made from
    # (None for an uploaded source).
    kind: str = "create"
    source: str | None = None
    # When an answer first told a client this job had ended (completed or failed).
    reported_ended_at: float | None = None


@dataclass(frozen=True)
class SourceVideo:
    """What an edit or extension starts from: a completed job's MP4, or an uploaded one."""

    path: Path
    size: str
    seconds: int
    model: str = "sora-2"
    video_id: str | None = None


@dataclass(frozen=True)
class Character:
    id: str
    name: str
    created_at: float
    video_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": int(self.created_at), "name": self.name}


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": int(self.created_at),
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class RequestRecord:
    method: str
    path: str
    endpoint: str
    status: int
    bytes: int
    seconds: float
    at: float

    # Jobs this answer was the first to report ended (a retrieve's or a list page's).
    ended: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "endpoint": self.endpoint,
            "status": self.status,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 6),
            "at": self.at,
            **({"ended": list(self.ended)} if self.ended else {}),
        }


@dataclass
class EmulatorState:
    config: EmulatorConfig = field(default_factory=EmulatorConfig)
    faults: FaultPlan = field(default_factory=FaultPlan)
    jobs: dict[str, Job] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    requests: list[RequestRecord] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    characters: dict[str, Character] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sora-emulator-")))
    _pool: Executor | None = None
    _spawner: ThreadPoolExecutor | None = None
    _shared: dict[str, Future[RenderedAssets]] = field(default_factory=dict)
    # For --idle-exit: monotonic time of the last request seen, and requests still running.
    last_request_at: float = field(default_factory=time.monotonic)
    requests_in_flight: int = 0

    @property
    def pool(self) -> Executor:
        # Separate processes: encoding never competes with the API's event loop for
        # the GIL. "spawn", because forking a process that runs threads is unsafe.
        # watch_parent makes each worker exit with this process, SIGKILL included.
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.config.render_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=watch_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _submit(self, render: Any, *args: Any, **kwargs: Any) -> Future[RenderedAssets]:
        # ProcessPoolExecutor starts workers in the thread that calls submit(), and Linux
        # sends PDEATHSIG when that thread ends: submit from one thread that lives as long
        # as the pool, never from a short-lived one (an anyio worker thread, say).
        with self._lock:
            if self._spawner is None:
                self._spawner = ThreadPoolExecutor(1, thread_name_prefix="sora-emulator-spawner")
            spawner = self._spawner
        return spawner.submit(lambda: self.pool.submit(render, *args, **kwargs)).result()

    @property
    def jobs_created(self) -> int:
        """Video jobs made, of every kind (create, remix, edit, extend): what a client paid for."""
        return self.counters["jobs_created"]

    def jobs_created_by(self, kind: str) -> int:
        """Video jobs made by one kind of request: 'create', 'remix', 'edit' or 'extend'."""
        if kind not in JOB_KINDS:
            raise ValueError(f"kind must be one of {JOB_KINDS}, got {kind!r}")
        return self.counters[f"jobs_created:{kind}"]

    def create_job(
        self,
        *,
        model: str,
        prompt: str,
        seconds: str,
        size: str,
        reference: bytes | None = None,
        remixed_from: str | None = None,
        kind: str = "create",
        source: SourceVideo | None = None,
    ) -> Job:
        """Make a job and start its render. An edit or extension (``kind``) needs its ``source``."""
        if kind not in JOB_KINDS:
            raise ValueError(f"kind must be one of {JOB_KINDS}, got {kind!r}")
        if (kind in ("edit", "extend")) != (source is not None):
            raise ValueError("edits and extensions, and only they, take a source video")
        video_id = "video_" + secrets.token_hex(16)
        # Still reported completed, as asked: a provider's broken render looks like any other.
        defects = self.faults.render_defects(prompt, kind)
        if source is not None:
            render = self._render_from_source(video_id, kind, prompt, size, int(seconds), source, defects)
        else:
            render = self._render(video_id, prompt, size, seconds, reference, defects)
        job = Job(
            id=video_id,
            model=model,
            prompt=prompt,
            seconds=seconds,
            size=size,
            created_at=time.time(),
            render=render,
            reference=reference,
            remixed_from=remixed_from,
            moderated=self.faults.is_moderated(prompt),
            kind=kind,
            source=source.video_id if source is not None else None,
        )
        render.add_done_callback(lambda _: setattr(job, "rendered_at", time.time()))
        with self._lock:
            self.jobs[video_id] = job
            self.counters["jobs_created"] += 1
            self.counters[f"jobs_created:{kind}"] += 1
        return job

    def _render(
        self,
        video_id: str,
        prompt: str,
        size: str,
        seconds: str,
        reference: bytes | None,
        defects: frozenset[str] = frozenset(),
    ) -> Future[RenderedAssets]:
        shared_key = f"shared-{size}-{seconds}-{'image' if reference else 'text'}{_suffix(defects)}"
        shared = self._shared_render(shared_key)
        if shared is not None:
            return shared
        render = self._submit(
            render_job,
            self._workdir / (shared_key if self.config.reuse_renders else video_id),
            prompt="shared render" if self.config.reuse_renders else prompt,
            size=size,
            seconds=int(seconds),
            reference=reference,
            pad_bytes=self.config.pad_bytes,
            defects=defects,
        )
        return self._share(shared_key, render)

    def _render_from_source(
        self,
        video_id: str,
        kind: str,
        prompt: str,
        size: str,
        seconds: int,
        source: SourceVideo,
        defects: frozenset[str] = frozenset(),
    ) -> Future[RenderedAssets]:
        shared_key = f"shared-{size}-{seconds}-{kind}{_suffix(defects)}"
        shared = self._shared_render(shared_key)
        if shared is not None:
            return shared
        directory = self._workdir / (shared_key if self.config.reuse_renders else video_id)
        directory.mkdir(parents=True, exist_ok=True)
        # The render reads its own copy: deleting the source job must not break it.
        copy = directory / f"source-{video_id}.mp4"
        shutil.copyfile(source.path, copy)
        render = self._submit(
            render_from_source,
            directory,
            mode=kind,
            prompt="shared render" if self.config.reuse_renders else prompt,
            size=size,
            source=copy,
            source_seconds=source.seconds,
            seconds=seconds,
            pad_bytes=self.config.pad_bytes,
            defects=defects,
        )
        return self._share(shared_key, render)

    def _shared_render(self, key: str) -> Future[RenderedAssets] | None:
        if not self.config.reuse_renders:
            return None
        with self._lock:
            return self._shared.get(key)

    def _share(self, key: str, render: Future[RenderedAssets]) -> Future[RenderedAssets]:
        if not self.config.reuse_renders:
            return render
        with self._lock:
            return self._shared.setdefault(key, render)

    def upload_path(self, suffix: str = ".mp4") -> Path:
        """A fresh path for an uploaded file, inside the emulator's work directory."""
        uploads = self._workdir / "uploads"
        uploads.mkdir(parents=True, exist_ok=True)
        return uploads / f"{secrets.token_hex(12)}{suffix}"

    def add_character(self, name: str, video_bytes: int) -> Character:
        character = Character("char_" + secrets.token_hex(12), name, time.time(), video_bytes)
        with self._lock:
            self.characters[character.id] = character
            self.counters["characters_created"] += 1
        return character

    def add_file(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile("file-" + secrets.token_hex(12), filename, purpose, data, time.time())
        with self._lock:
            self.files[stored.id] = stored
        return stored

    def get(self, video_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(video_id)

    def delete(self, video_id: str) -> bool:
        with self._lock:
            job = self.jobs.pop(video_id, None)
            if job is None:
                return False
            self.deleted.add(video_id)
        shutil.rmtree(self._workdir / video_id, ignore_errors=True)
        return True

    def listing(self) -> list[Job]:
        with self._lock:
            return list(self.jobs.values())

    def report(self, job: Job, described: dict[str, Any]) -> bool:
        """Note that a client is being told ``described``; True if it is the first news that the job ended.

        How long a client held a job as rendering (its create to the answer that told it
        the job had ended) is what concurrency limits are measured by.
        """
        if described["status"] not in ("completed", "failed"):
            return False
        with self._lock:
            if job.reported_ended_at is not None:
                return False
            job.reported_ended_at = time.time()
            return True

    def describe(self, job: Job, now: float | None = None) -> dict[str, Any]:
        """The job as the Videos API returns it, its status derived from the clock."""
        now = time.time() if now is None else now
        render_seconds = self.config.render_seconds
        elapsed = now - job.created_at
        status, progress = "in_progress", 0
        error: dict[str, str] | None = None
        completed_at: float | None = None
        if job.render.done() and elapsed >= render_seconds:
            completed_at = max(job.created_at + render_seconds, job.rendered_at or now)
            if job.moderated:
                status = "failed"
                error = {
                    "code": "moderation_blocked",
                    "message": "Your request was blocked by our moderation system.",
                }
            elif job.render.exception() is not None:
                status = "failed"
                error = {"code": "internal_error", "message": f"Rendering failed: {job.render.exception()}"}
            else:
                status, progress = "completed", 100
        elif elapsed < render_seconds * QUEUED_SHARE:
            status = "queued"
        else:
            progress = min(99, int(100 * elapsed / max(render_seconds, 1e-9)))
        return {
            "id": job.id,
            "object": "video",
            "model": job.model,
            "status": status,
            "progress": progress,
            "created_at": int(job.created_at),
            "completed_at": int(completed_at) if completed_at and status == "completed" else None,
            "expires_at": (
                int(completed_at + self.config.asset_ttl_seconds) if completed_at and status == "completed" else None
            ),
            "error": error,
            "prompt": job.prompt,
            "seconds": job.seconds,
            "size": job.size,
            "remixed_from_video_id": job.remixed_from,
        }

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)
            self.counters[f"{record.method} {record.endpoint}"] += 1
            if self.config.request_log is not None:
                with self.config.request_log.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record.as_dict()) + "\n")

    def count(self, endpoint: str, *, method: str | None = None, status: int | None = None) -> int:
        """Requests seen for an endpoint kind ('create', 'retrieve', 'content', ...)."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r.endpoint == endpoint
                and (method is None or r.method == method)
                and (status is None or r.status == status)
            )

    def reset(self) -> None:
        """Forget jobs, requests and faults (between tests sharing one server)."""
        with self._lock:
            for job in self.jobs.values():
                job.render.cancel()  # renders nobody will ask for again
            self.jobs.clear()
            self._shared.clear()
            self.deleted.clear()
            self.requests.clear()
            self.counters.clear()
            self.characters.clear()
            self.files.clear()
        self.faults.clear()

    def close(self) -> None:
        """Stop the render workers, busy ones included, and delete the rendered files."""
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)  # no submit (so no new worker) is under way now
        if self._pool is not None:
            # shutdown() lets a worker finish the encode it is in, and forgets its processes.
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            stop_processes(processes)
        shutil.rmtree(self._workdir, ignore_errors=True)


def _suffix(defects: frozenset[str]) -> str:
    """Shared renders of defective jobs are kept apart from the good ones."""
    return "".join(f"-{defect}" for defect in sorted(defects))
