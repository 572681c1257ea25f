"""The parallel ledger sweep: the core's bounded pool, and collect-pending draining thousands in one run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sora_tasks.core.errors import VideoNotReadyError
from sora_tasks.core.jobs.sweep import sweep
from sora_tasks.core.storage.ledger import Ledger, PendingVideo
from sora_tasks.flows.deferred import collect_pending

from .apis import api_for
from .prefect_api import prefect_api, sora_events

THOUSAND = 1000


def record(video_id: str, output: str = "/tmp/never/{video_id}.mp4", **fields: Any) -> PendingVideo:
    return PendingVideo(video_id=video_id, output=output, **fields)


# -- the core sweep, with a stand-in delivery ------------------------------------------


def test_the_sweep_delivers_on_several_threads_at_once(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "ledger"))
    for n in range(8):
        book.add(record(f"video_{n}"))
    together = threading.Barrier(4, timeout=10)  # passes only when four deliveries run at the same time
    threads: set[str] = set()

    def deliver(pending: PendingVideo) -> str:
        threads.add(threading.current_thread().name)
        together.wait()
        return f"done/{pending.video_id}"

    rows = sweep(book, deliver, workers=4)
    assert sorted(row["video_id"] for row in rows) == [f"video_{n}" for n in range(8)]
    assert {row["outcome"] for row in rows} == {"delivered"} and len(threads) == 4
    assert list(book.video_ids()) == []


def test_the_sweep_reads_the_ledger_as_it_goes_and_skips_records_taken_meanwhile(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "ledger"))
    for n in range(100):
        book.add(record(f"video_{n:03d}"))
    listed: list[str] = []
    first_delivery_after: list[int] = []

    def listing() -> Iterator[str]:
        for n in range(100):
            if n == 5:
                book.forget("video_005")  # another sweep delivers it between listing and reading
            listed.append(f"video_{n:03d}")
            yield f"video_{n:03d}"

    book.video_ids = listing  # type: ignore[method-assign]

    def deliver(pending: PendingVideo) -> str:
        if not first_delivery_after:
            first_delivery_after.append(len(listed))
        return "ok"

    rows = sweep(book, deliver, workers=2)
    assert first_delivery_after[0] <= 3  # delivering began before the ledger was listed, let alone read
    assert len(rows) == 99 and "video_005" not in {row["video_id"] for row in rows}
    assert [row["video_id"] for row in rows] == sorted(row["video_id"] for row in rows)  # listing order


def test_the_limit_counts_records_looked_at_not_records_found_gone(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "ledger"))
    for name in ("video_a", "video_b", "video_c", "video_d"):
        book.add(record(name))

    def listing() -> Iterator[str]:
        yield "video_a"
        book.forget("video_b")
        yield from ("video_b", "video_c", "video_d")

    book.video_ids = listing  # type: ignore[method-assign]
    rows = sweep(book, lambda pending: "ok", workers=1, limit=2)
    assert [row["video_id"] for row in rows] == ["video_a", "video_c"]
    assert [name for name in ("video_a", "video_b", "video_c", "video_d") if book.get(name)] == ["video_d"]


def test_one_broken_record_neither_stops_the_sweep_nor_leaves_the_ledger(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "ledger"))
    for name in ("video_good", "video_bug", "video_later"):
        book.add(record(name))
    (tmp_path / "ledger" / "garbled.json").write_text("{not json")

    def deliver(pending: PendingVideo) -> str:
        if pending.video_id == "video_bug":
            raise KeyError("surprise")
        if pending.video_id == "video_later":
            raise VideoNotReadyError("video_later", "in_progress")
        return "ok"

    seen: list[str] = []
    rows = {
        row["video_id"]: row for row in sweep(book, deliver, workers=3, on_row=lambda row: seen.append(row["video_id"]))
    }
    assert sorted(seen) == sorted(rows) == ["garbled", "video_bug", "video_good", "video_later"]
    assert rows["video_good"]["outcome"] == "delivered" and rows["video_later"]["outcome"] == "rendering"
    assert rows["video_bug"]["outcome"] == "retry" and rows["video_bug"]["detail"] == "KeyError: 'surprise'"
    assert rows["garbled"]["outcome"] == "skipped" and "record not trusted" in rows["garbled"]["detail"]
    assert sorted(book.video_ids()) == ["garbled", "video_bug", "video_later"]


def test_a_record_that_cannot_be_removed_keeps_its_outcome(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "ledger"))
    book.add(record("video_a"))

    def refuse(video_id: str) -> None:
        raise PermissionError("read-only ledger")

    book.forget = refuse  # type: ignore[method-assign]
    [row] = sweep(book, lambda pending: "s3://b/a.mp4", workers=2)
    assert row["outcome"] == "delivered" and "record not removed: PermissionError" in row["detail"]
    assert book.get("video_a") is not None


def test_a_listing_failure_stops_the_sweep_and_is_raised(tmp_path: Path) -> None:
    book = Ledger(str(tmp_path / "ledger"))
    book.add(record("video_a"))

    def listing() -> Iterator[str]:
        yield "video_a"
        raise ConnectionError("listing cut off")

    book.video_ids = listing  # type: ignore[method-assign]
    with pytest.raises(ConnectionError, match="listing cut off"):
        sweep(book, lambda pending: "ok", workers=4)


# -- collect-pending on the emulator and a real Prefect API ------------------------------


def flow_run_children(flow_run_id: str) -> tuple[list[Any], list[Any]]:
    """The task runs and the artifacts of one flow run."""
    runs = prefect_api("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
    artifacts = prefect_api("POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return runs, artifacts


@pytest.fixture
def shared_renders(emulator):  # type: ignore[no-untyped-def]
    """Every job of a size and length served from one encode, finished as soon as it is encoded."""
    emulator.state.config.reuse_renders = True
    emulator.state.config.render_seconds = 0.0
    yield emulator
    emulator.state.config.reuse_renders = False


def test_one_collect_pending_run_drains_a_thousand_finished_jobs(shared_renders, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    emulator = shared_renders
    jobs = [
        emulator.state.create_job(model="sora-2", prompt=f"sweep {n}", seconds="4", size="1280x720")
        for n in range(THOUSAND)
    ]
    clip = jobs[0].render.result(timeout=120).video.read_bytes()
    book = Ledger(str(tmp_path / "ledger"))
    out = tmp_path / "out"
    for job in jobs:
        book.add(PendingVideo(job.id, str(out / "{video_id}.mp4"), "sora-2", "4", "1280x720", emulator.base_url))

    started = time.monotonic()
    state = collect_pending(
        api=api_for(emulator), ledger=book.location, previews=False, return_state=True
    )  # videos only: the rate
    took = time.monotonic() - started
    rows = state.result()
    print(f"collect-pending delivered {len(rows)} videos in {took:.1f} s ({len(rows) / took:.0f}/s)")

    assert [row["outcome"] for row in rows] == ["delivered"] * THOUSAND, {row["outcome"] for row in rows}
    assert sorted(row["video_id"] for row in rows) == sorted(job.id for job in jobs)
    files = sorted(out.iterdir())
    assert [path.name for path in files] == sorted(f"{job.id}.mp4" for job in jobs)
    assert all(path.read_bytes() == clip for path in files)
    assert list(book.video_ids()) == [] and book.pending() == []
    # One look and one download per video, and no Prefect task run per video: one artifact for the sweep.
    assert emulator.state.count("retrieve") == THOUSAND and emulator.state.count("content") == THOUSAND
    task_runs, artifacts = flow_run_children(str(state.state_details.flow_run_id))
    assert task_runs == [] and [artifact["type"] for artifact in artifacts] == ["table"]


def test_a_mixed_ledger_reports_every_outcome_and_keeps_only_what_still_renders(shared_renders, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    emulator = shared_renders
    emulator.faults.moderation_words = ("forbidden",)
    emulator.state.config.render_seconds = 60.0
    emulator.state.config.asset_ttl_seconds = 30.0
    jobs = {
        name: emulator.state.create_job(model="sora-2", prompt=f"{name} clip", seconds="4", size="1280x720")
        for name in ("done", "rendering", "forbidden", "expired")
    }
    clip = jobs["done"].render.result(timeout=120).video.read_bytes()
    deadline = time.monotonic() + 10
    while any(job.rendered_at is None for job in jobs.values()):  # set by a callback just after the result
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # Move the emulator's clock back for all but one: rendered a minute ago (the expired
    # one long enough ago for its assets to be gone) rather than waiting for it.
    now = time.time()
    for name in ("done", "forbidden", "expired"):
        jobs[name].created_at = now - 120
    jobs["expired"].rendered_at = now - 120
    book = Ledger(str(tmp_path / "ledger"))
    ids = {name: job.id for name, job in jobs.items()} | {"missing": "video_" + "0" * 32}
    for name, video_id in ids.items():
        book.add(PendingVideo(video_id, str(tmp_path / "out" / f"{name}.mp4"), base_url=emulator.base_url))

    state = collect_pending(api=api_for(emulator), ledger=book.location, return_state=True)
    outcomes = {row["video_id"]: row for row in state.result()}
    assert {name: outcomes[video_id]["outcome"] for name, video_id in ids.items()} == {
        "done": "delivered",
        "rendering": "rendering",
        "forbidden": "failed",
        "expired": "expired",
        "missing": "missing",
    }
    assert "moderation_blocked" in outcomes[ids["forbidden"]]["detail"]
    assert "expired at" in outcomes[ids["expired"]]["detail"]
    assert (tmp_path / "out" / "done.mp4").read_bytes() == clip
    # Previews beside the one video delivered, as every delivery has them.
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "done.mp4",
        "done.spritesheet.jpg",
        "done.thumbnail.webp",
    ]
    assert [pending.video_id for pending in book.pending()] == [ids["rendering"]]
    _, artifacts = flow_run_children(str(state.state_details.flow_run_id))
    [table] = [json.loads(artifact["data"]) for artifact in artifacts]  # one table for the sweep
    assert sorted(row["outcome"] for row in table) == ["delivered", "expired", "failed", "missing", "rendering"]
    assert sora_events(ids["forbidden"], {"sora.video.failed"}) == {"sora.video.failed"}
    assert sora_events(ids["done"], {"sora.video.uploaded"}) == {"sora.video.uploaded"}
