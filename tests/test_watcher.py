"""The shared status reads of a batch (sora_tasks.core.api.watcher), against the emulator through the real SDK."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import pytest
from openai.types import Video

from sora_tasks.core import VideoRequest, VideosClient
from sora_tasks.core.api import watcher as watcher_module
from sora_tasks.core.api.watcher import JobWatcher
from sora_tasks.core.errors import ModerationBlockedError, VideoNotReadyError, VideoTimeoutError


def client_for(emulator: Any, **options: Any) -> VideosClient:
    return VideosClient(api_key="k", base_url=emulator.base_url, **options)


def created(client: VideosClient, count: int, tag: str) -> list[str]:
    return [client.create(VideoRequest.build(f"{tag} {n}")).id for n in range(count)]


def wait_all(watcher: JobWatcher, ids: list[str], max_wait: float = 30.0) -> list[Video | BaseException]:
    """Every id waited on from its own thread, as batch rows do; each outcome or exception."""

    def one(video_id: str) -> Video | BaseException:
        try:
            return watcher.wait(video_id, max_wait=max_wait)
        except Exception as error:  # the outcome under test
            return error

    with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
        return list(pool.map(one, ids))


def test_many_jobs_are_read_from_the_list_not_one_by_one(  # type: ignore[no-untyped-def]
    emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator.state.config, "reuse_renders", True)  # one encode for all: what is timed is reads
    emulator.state.config.render_seconds = 1.0
    client = client_for(emulator)
    ids = created(client, 8, "watched")
    started = time.monotonic()
    outcomes = wait_all(JobWatcher(client_for(emulator), poll_interval=0.1), ids)
    intervals = (time.monotonic() - started) / 0.1
    assert [getattr(outcome, "status", outcome) for outcome in outcomes] == ["completed"] * 8
    assert [outcome.id for outcome in outcomes if isinstance(outcome, Video)] == ids
    # Polled alone, each job is read once an interval (8 reads an interval). Created
    # together, they fall due together: one page an interval reads them all, and a
    # retrieve reads the last one left.
    reads = emulator.state.count("list") + emulator.state.count("retrieve")
    assert emulator.state.count("list") > 0 and emulator.state.count("retrieve") < 8
    assert reads <= intervals + 3, f"{reads} reads in {intervals:.0f} intervals"
    # Each job was seen ended by one answer, as the request log records it.
    ended = [video_id for record in emulator.state.requests for video_id in record.ended]
    assert sorted(ended) == sorted(ids)


def test_a_single_job_is_retrieved(emulator) -> None:  # type: ignore[no-untyped-def]
    client = client_for(emulator)
    (video_id,) = created(client, 1, "alone")
    video = JobWatcher(client_for(emulator), poll_interval=0.1).wait(video_id, max_wait=30)
    assert video.status == "completed" and video.id == video_id
    assert emulator.state.count("list") == 0 and emulator.state.count("retrieve") >= 1


def test_a_job_beyond_the_pages_read_is_retrieved_on_its_own(  # type: ignore[no-untyped-def]
    emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher_module, "MAX_PAGES", 1)
    monkeypatch.setattr(emulator.state.config, "reuse_renders", True)
    client = client_for(emulator)
    (older,) = created(client, 1, "older")
    created(client, 12, "newer, not waited on")  # a first page of 2*2+8 = 12 jobs ends before `older`
    (newest,) = created(client, 1, "newest")
    outcomes = wait_all(JobWatcher(client_for(emulator), poll_interval=0.1), [older, newest])
    assert [getattr(outcome, "id", outcome) for outcome in outcomes] == [older, newest]
    retrieved = [record.path.split("/")[-1] for record in emulator.state.requests if record.endpoint == "retrieve"]
    ended = {video_id: record.endpoint for record in emulator.state.requests for video_id in record.ended}
    # `older` is read on its own every round; `newest` from the list while `older` is
    # waited on too (and on its own once it is the only one left).
    assert older in retrieved and ended[older] == "retrieve"
    assert emulator.state.count("list") >= 1


def test_a_failing_list_falls_back_to_retrieves_for_that_round(emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.inject("500", endpoint="list", count=3)
    client = client_for(emulator)
    ids = created(client, 3, "list fails")
    outcomes = wait_all(JobWatcher(client_for(emulator, max_retries=0), poll_interval=0.1), ids)
    assert [getattr(outcome, "status", outcome) for outcome in outcomes] == ["completed"] * 3
    assert emulator.state.count("list", status=500) == 3
    assert emulator.state.count("retrieve") >= 3  # the rounds whose list failed


def test_failed_unknown_and_late_jobs_reach_their_own_waiters(emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.faults.moderation_words = ("forbidden",)
    client = client_for(emulator)
    fine = client.create(VideoRequest.build("a fine video")).id
    refused = client.create(VideoRequest.build("a forbidden video")).id
    outcomes = wait_all(JobWatcher(client_for(emulator), poll_interval=0.1), [fine, refused, "video_unknown"])
    assert isinstance(outcomes[0], Video) and outcomes[0].status == "completed"
    assert isinstance(outcomes[1], ModerationBlockedError) and outcomes[1].video_id == refused
    assert isinstance(outcomes[2], VideoNotReadyError) and outcomes[2].status == "not_found"

    emulator.state.config.render_seconds = 30.0
    slow = client.create(VideoRequest.build("a slow video")).id
    started = time.monotonic()
    with pytest.raises(VideoTimeoutError, match=slow):
        JobWatcher(client_for(emulator), poll_interval=0.1).wait(slow, max_wait=0.5)
    assert time.monotonic() - started < 5
