"""VideosClient's remix, edit, extend, characters and image references, against the real emulator.

Each is sent once, reconciled after an ambiguous failure, refused before any request
when the provider lacks it or the input is bad, and turned into a configuration error
when OpenAI's hosted API answers that its videos endpoints are gone.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from PIL import Image

from sora_tasks.core import (
    ConfigurationError,
    InvalidRequestError,
    ServerRejectedError,
    TransientError,
    VideoRequest,
    VideosClient,
)
from sora_tasks.emulator.render import render_job

from .media import api_requests, probe_mp4


def png(size: tuple[int, int] = (1280, 720)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local 4 s, 1280x720 H.264 MP4, made once for the module."""
    return render_job(tmp_path_factory.mktemp("local"), prompt="local", size="1280x720", seconds=4).video


@pytest.fixture
def shared_renders(emulator: Any) -> Iterator[None]:
    """One encode per (size, seconds, kind), for tests that never look at the pictures."""
    emulator.state.config.reuse_renders = True
    yield
    emulator.state.config.reuse_renders = False


def client_for(emulator: Any, **options: Any) -> VideosClient:
    return VideosClient(api_key="k", base_url=emulator.base_url, **options)


def completed(client: VideosClient, prompt: str = "a source clip") -> str:
    return client.wait(client.create(VideoRequest.build(prompt)).id, poll_interval=0.1).id


def test_remix_edit_extend_and_characters_by_id(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = client_for(emulator)
    source = completed(client)
    remix = client.remix(source, prompt="the same, at dawn")
    edit = client.edit(prompt="warmer light", video=source)
    extension = client.extend(prompt="then the rain stops", seconds=4, video=source)
    assert remix.remixed_from_video_id == source
    assert (edit.seconds, edit.size) == ("4", "1280x720") and (extension.seconds, extension.size) == ("8", "1280x720")
    client.wait(extension.id, poll_interval=0.1)
    probe = probe_mp4(client.download(extension.id, directory=tmp_path).path)
    assert (probe.codec, probe.frames, probe.seconds) == ("h264", 192, 8.0)
    character = client.create_character(name="Dawn", video=source)  # the generic profile sends an id as JSON
    assert client.get_character(str(character.id)).name == "Dawn"
    state = emulator.state
    assert [state.jobs_created_by(kind) for kind in ("create", "remix", "edit", "extend")] == [1, 1, 1, 1]
    assert [state.count(kind) for kind in ("create", "remix", "edit", "extend")] == [1, 1, 1, 1]


def test_edit_extend_and_characters_by_local_file(emulator, source_path: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = client_for(emulator)
    edit = client.edit(prompt="a local edit", video=source_path)
    extension = client.extend(prompt="a local extension", seconds="4", video=str(source_path))
    assert (edit.seconds, extension.seconds) == ("4", "8")
    client.wait(extension.id, poll_interval=0.1)
    assert probe_mp4(client.download(extension.id, directory=tmp_path).path).frames == 192
    character = client.create_character(name="Local", video=source_path)
    assert character.name == "Local" and emulator.state.characters[str(character.id)].video_bytes > 1000
    assert emulator.state.jobs_created == 2


def test_create_with_image_url_and_file_id(emulator) -> None:  # type: ignore[no-untyped-def]
    client = client_for(emulator)
    data_url = "data:image/png;base64," + base64.b64encode(png()).decode()
    by_url = client.create(VideoRequest.build("by url", resolution="1280x720"), image_url=data_url)
    stored = OpenAI(base_url=emulator.base_url, api_key="k").files.create(
        file=("r.png", png(), "image/png"), purpose="vision"
    )
    by_file = client.create(VideoRequest.build("by file", resolution="1280x720"), file_id=stored.id)
    assert emulator.state.get(by_url.id).reference == png() == emulator.state.get(by_file.id).reference
    assert emulator.state.count("create") == 2 and emulator.state.jobs_created == 2


@pytest.mark.usefixtures("shared_renders")
def test_ambiguous_failures_are_reconciled_not_resent(emulator, source_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = client_for(emulator)
    source = completed(client)
    state = emulator.state
    made = {
        "remix": lambda: client.remix(source, prompt="ambiguous remix"),
        "edit": lambda: client.edit(prompt="ambiguous edit", video=source),
        "extend": lambda: client.extend(prompt="ambiguous extension", seconds=8, video=source),
    }
    found = {}
    for kind, send in made.items():
        emulator.faults.inject("create_then_500", endpoint=kind)
        found[kind] = send()  # the job was made, the answer lost: found in the list, not paid again
        assert state.count(kind) == 1 and state.count(kind, status=500) == 1 and state.jobs_created_by(kind) == 1
        assert state.get(found[kind].id).kind == kind
    assert found["remix"].remixed_from_video_id == source and found["extend"].seconds == "12"
    # An uploaded source is matched by prompt and time.
    emulator.faults.inject("create_then_500", endpoint="edit")
    uploaded = client.edit(prompt="ambiguous upload", video=source_path)
    assert state.get(uploaded.id).source is None and state.count("edit") == 2 and state.jobs_created_by("edit") == 2


@pytest.mark.usefixtures("shared_renders")
def test_rate_limits_are_waited_out_and_plain_500s_raise_transient(emulator) -> None:  # type: ignore[no-untyped-def]
    client = client_for(emulator)
    source = completed(client)
    emulator.faults.inject("429", endpoint="remix")
    remix = client.remix(source, prompt="after a 429")
    assert emulator.state.count("remix", status=429) == 1 and remix.remixed_from_video_id == source
    emulator.faults.inject("500", endpoint="extend")  # answered 500 before making anything
    with pytest.raises(TransientError) as caught:
        client.extend(prompt="nothing made", seconds=4, video=source)
    assert caught.value.status_code == 500 and emulator.state.count("extend") == 1
    assert emulator.state.jobs_created_by("extend") == 0 and emulator.state.count("list") == 3  # looked 3 times


@pytest.mark.usefixtures("shared_renders")
def test_a_retry_adopts_the_job_an_earlier_attempt_made(emulator) -> None:  # type: ignore[no-untyped-def]
    client = client_for(emulator)
    source = completed(client)
    started = time.time()
    emulator.faults.inject("create_then_500", endpoint="edit")
    sdk = OpenAI(base_url=emulator.base_url, api_key="k", max_retries=0)
    with pytest.raises(Exception, match="500"):
        sdk.post("/videos/edits", body={"prompt": "earlier attempt", "video": {"id": source}}, cast_to=dict)
    adopted = client.edit(prompt="earlier attempt", video=source, reconcile_since=started)
    assert emulator.state.count("edit") == 1 and emulator.state.get(adopted.id).kind == "edit"


def test_unsupported_operations_are_refused_before_any_request(emulator, source_path: Path) -> None:  # type: ignore[no-untyped-def]
    refusals: list[tuple[Any, str]] = []
    omni = client_for(emulator, provider="vllm-omni")
    request = VideoRequest.build("x")
    refusals += [
        (lambda: omni.remix("video_123", prompt="p"), "provider vllm-omni does not support remix"),
        (lambda: omni.edit(prompt="p", video="video_123"), "provider vllm-omni does not support edit"),
        (lambda: omni.extend(prompt="p", seconds=4, video=source_path), "provider vllm-omni does not support extend"),
        (lambda: omni.create_character(name="n", video=source_path), "vllm-omni does not support characters"),
        (lambda: omni.get_character("char_123"), "provider vllm-omni does not support characters"),
        (
            lambda: omni.create(request, image_url="https://example.com/a.png"),
            "does not support image references by URL",
        ),
        (lambda: omni.create(request, file_id="file-123"), "vllm-omni does not support image references by file id"),
    ]
    litellm = client_for(emulator, provider="litellm")
    refusals += [
        (lambda: litellm.extend(prompt="p", seconds=4, video=source_path), "litellm cannot extend a local file"),
        (lambda: litellm.edit(prompt="p", video=str(source_path)), "litellm cannot edit a local file"),
        (lambda: litellm.create_character(name="n", video="video_1"), "litellm does not support characters"),
        (lambda: litellm.create(request, file_id="file-123"), "litellm does not support image references by file id"),
    ]
    hosted = client_for(emulator, provider="openai")
    refusals.append(
        (lambda: hosted.create_character(name="n", video="video_123"), "openai cannot make a character from a video id")
    )
    for refuse, message in refusals:
        with pytest.raises(InvalidRequestError, match=message):
            refuse()
    assert api_requests(emulator) == []


def test_bad_input_is_refused_before_any_request(emulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = client_for(emulator)
    not_mp4 = tmp_path / "notes.mp4"
    not_mp4.write_text("not a video")
    request = VideoRequest.build("x")
    cases: list[tuple[Any, str]] = [
        (lambda: client.edit(prompt="  ", video="video_123"), "prompt must be a non-empty string"),
        (lambda: client.remix("video_123", prompt=""), "prompt must be a non-empty string"),
        (lambda: client.extend(prompt="p", seconds=5, video="video_123"), "seconds .* one of 4, 8, 12, 16, 20"),
        (lambda: client.extend(prompt="p", seconds="ten", video="video_123"), "seconds .* one of 4, 8, 12, 16, 20"),
        (lambda: client.edit(prompt="p", video=tmp_path / "missing.mp4"), "video: no such file"),
        (lambda: client.edit(prompt="p", video=str(not_mp4)), "is not an MP4"),
        (lambda: client.extend(prompt="p", seconds=4, video="s3://bucket/a.mp4"), "S3 object"),
        (lambda: client.edit(prompt="p", video="video id with spaces"), "video must be a video id"),
        (lambda: client.remix("video/../../x?", prompt="p"), "video_id must be an id"),
        (lambda: client.create_character(name=" ", video="video_123"), "name must be a non-empty string"),
        (lambda: client.get_character("char 1"), "character_id must be an id"),
        (lambda: client.create(request, image_url="ftp://example.com/a.png"), "image_url must be an http"),
        (lambda: client.create(request, file_id="file 1"), "file_id must be an id"),
        (lambda: client.create(request, image_url="https://e.com/a.png", file_id="file-1"), "at most one"),
    ]
    for refuse, message in cases:
        with pytest.raises(InvalidRequestError, match=message):
            refuse()
    assert api_requests(emulator) == []


@pytest.mark.usefixtures("shared_renders")
def test_hosted_shutdown_is_a_configuration_error(emulator) -> None:  # type: ignore[no-untyped-def]
    ready = completed(client_for(emulator))
    emulator.state.config.hosted_shutdown = True
    # The "openai" profile is OpenAI's hosted API wherever it points; so is api.openai.com with any profile.
    hosted = client_for(emulator, provider="openai")
    assert hosted.hosted_by_openai and VideosClient(api_key="k", base_url="https://api.openai.com/v1").hosted_by_openai
    attempts = {
        "create": lambda: hosted.create(VideoRequest.build("gone")),
        "remix": lambda: hosted.remix(ready, prompt="gone"),
        "edit": lambda: hosted.edit(prompt="gone", video=ready),
        "extend": lambda: hosted.extend(prompt="gone", seconds=4, video=ready),
    }
    for endpoint, attempt in attempts.items():
        with pytest.raises(ConfigurationError, match="shut down on 2026-09-24") as caught:
            attempt()
        assert "base_url" in str(caught.value) and "sora-emulator" in str(caught.value)
        assert emulator.state.count(endpoint, status=404) == 1  # sent once, nothing to reconcile
    assert emulator.state.count("list") == 0
    # Elsewhere the same answer is the server's refusal, not a shutdown.
    with pytest.raises(ServerRejectedError) as generic:
        client_for(emulator).create(VideoRequest.build("gone"))
    assert generic.value.status_code == 404 and not isinstance(generic.value, ConfigurationError)
    # On the hosted API, a 404 naming the source video means that video is missing.
    emulator.state.config.hosted_shutdown = False
    with pytest.raises(ServerRejectedError, match="not found") as missing:
        hosted.remix("video_missing", prompt="p")
    assert not isinstance(missing.value, ConfigurationError)
