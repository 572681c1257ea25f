"""The whole Videos API on the emulator, through the official SDK and plain HTTP, outputs decoded with PyAV.

Remix, edit, extend, characters, image references (uploaded, by image_url, by file_id),
files, the request log's endpoint names and the hosted-shutdown mode.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import av
import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import Video
from PIL import Image

from sora_tasks.emulator.render import render_job

from .media import api_requests, probe_mp4

BLUE = (10, 120, 220)


def png(size: tuple[int, int] = (1280, 720), colour: tuple[int, int, int] = BLUE) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def first_frame_colour(content: bytes) -> tuple[int, ...]:
    with av.open(io.BytesIO(content)) as container:
        return tuple(next(container.decode(video=0)).to_image().resize((1, 1)).getpixel((0, 0)))


@pytest.fixture
def client(emulator) -> OpenAI:  # type: ignore[no-untyped-def]
    return OpenAI(base_url=emulator.base_url, api_key="sk-any", max_retries=0)


@pytest.fixture(scope="module")
def source_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 4 s, 1280x720, 24 fps H.264 MP4 (what the emulator renders), made once for the module."""
    return render_job(tmp_path_factory.mktemp("source"), prompt="source", size="1280x720", seconds=4).video.read_bytes()


@pytest.fixture
def image_server() -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1: /ref.png is a 1280x720 blue PNG, anything else 404."""
    body = png()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/ref.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def shared_renders(emulator: Any) -> Iterator[None]:
    """One encode per (size, seconds, kind), for tests that never look at the pictures."""
    emulator.state.config.reuse_renders = True
    yield
    emulator.state.config.reuse_renders = False


def completed(client: OpenAI, prompt: str = "a source clip") -> Video:
    return client.videos.create_and_poll(prompt=prompt, size="1280x720", seconds="4", poll_interval_ms=100)


def done(client: OpenAI, video: Video) -> bytes:
    finished = client.videos.poll(video.id, poll_interval_ms=100)
    assert finished.status == "completed", finished.error
    return client.videos.download_content(video.id).content


# -- the SDK's own methods ---------------------------------------------------------------


@pytest.mark.usefixtures("shared_renders")
def test_sdk_remix_links_the_source(client: OpenAI, emulator) -> None:  # type: ignore[no-untyped-def]
    source = completed(client)
    remix = client.videos.remix(source.id, prompt="the same, at night")
    assert remix.remixed_from_video_id == source.id and (remix.size, remix.seconds) == ("1280x720", "4")
    assert emulator.state.jobs_created_by("remix") == 1 and emulator.state.count("remix") == 1


def test_sdk_extend_by_file_decodes_as_the_sum(client: OpenAI, emulator, source_mp4: bytes) -> None:  # type: ignore[no-untyped-def]
    extension = client.videos.extend(prompt="and then it rains", seconds="4", video=("s.mp4", source_mp4, "video/mp4"))
    assert (extension.seconds, extension.size, extension.status) == ("8", "1280x720", "queued")
    probe = probe_mp4(done(client, extension))
    assert (probe.codec, probe.width, probe.height, probe.fps, probe.frames, probe.seconds) == (
        "h264",
        1280,
        720,
        24.0,
        192,
        8.0,
    )
    assert emulator.state.jobs_created_by("extend") == 1 and emulator.state.jobs_created == 1


def test_sdk_edit_by_file_keeps_size_and_length(client: OpenAI, emulator, source_mp4: bytes) -> None:  # type: ignore[no-untyped-def]
    edit = client.videos.edit(prompt="make it warmer", video=("s.mp4", source_mp4, "video/mp4"))
    assert (edit.seconds, edit.size) == ("4", "1280x720")
    content = done(client, edit)
    probe = probe_mp4(content)
    assert (probe.width, probe.height, probe.frames) == (1280, 720, 96)
    assert content != source_mp4 and emulator.state.jobs_created_by("edit") == 1


def test_extension_by_id_through_json_is_the_source_then_the_new_segment(client: OpenAI) -> None:
    source = completed(client)
    original = client.videos.download_content(source.id).content
    extension = client.post(
        "/videos/extensions",
        body={"prompt": "the camera pulls back", "seconds": "8", "video": {"id": source.id}},
        cast_to=Video,
    )
    assert extension.seconds == "12"
    content = done(client, extension)
    assert probe_mp4(content).frames == 12 * 24
    # The first seconds are the source's frames, re-encoded: the same picture.
    assert max(abs(a - b) for a, b in zip(first_frame_colour(content), first_frame_colour(original), strict=True)) < 8


def test_sdk_characters_are_stored_and_returned(client: OpenAI, emulator, source_mp4: bytes) -> None:  # type: ignore[no-untyped-def]
    made = client.videos.create_character(name="Captain Paper", video=("c.mp4", source_mp4, "video/mp4"))
    assert made.id and made.id.startswith("char_") and made.name == "Captain Paper" and made.created_at > 0
    fetched = client.videos.get_character(made.id)
    assert (fetched.id, fetched.name, fetched.created_at) == (made.id, made.name, made.created_at)
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.get_character("char_unknown")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "character_id"
    with pytest.raises(openai.BadRequestError, match="name"):
        client.videos.create_character(name=" ", video=("c.mp4", source_mp4, "video/mp4"))
    assert emulator.state.jobs_created == 0  # a character is not a video job
    assert emulator.state.counters["POST character"] == 2 and emulator.state.counters["GET character"] == 2


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.usefixtures("shared_renders")
def test_edit_and_extend_refuse_unknown_and_unfinished_sources(client: OpenAI, emulator, source_mp4: bytes) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 30.0
    running = client.videos.create(prompt="still rendering")
    for path, extra in (("/videos/edits", {}), ("/videos/extensions", {"seconds": "4"})):
        with pytest.raises(openai.BadRequestError, match="not completed") as unfinished:
            client.post(path, body={"prompt": "p", "video": {"id": running.id}, **extra}, cast_to=Video)
        assert isinstance(unfinished.value.body, dict) and unfinished.value.body["param"] == "video"
        with pytest.raises(openai.NotFoundError, match="not found"):
            client.post(path, body={"prompt": "p", "video": {"id": "video_missing"}, **extra}, cast_to=Video)
    with pytest.raises(openai.BadRequestError, match="not an MP4"):
        client.videos.edit(prompt="p", video=("x.png", png(), "image/png"))
    with pytest.raises(openai.BadRequestError) as bad_seconds:
        client.videos.extend(prompt="p", seconds="5", video=("s.mp4", source_mp4, "video/mp4"))  # type: ignore[arg-type]
    assert isinstance(bad_seconds.value.body, dict) and bad_seconds.value.body["param"] == "seconds"
    assert "'4', '8', '12', '16', '20'" in bad_seconds.value.body["message"]
    with pytest.raises(openai.BadRequestError) as empty:
        client.post("/videos/edits", body={"prompt": " ", "video": {"id": running.id}}, cast_to=Video)
    assert isinstance(empty.value.body, dict) and empty.value.body["param"] == "prompt"
    assert emulator.state.jobs_created == 1  # only the running source


def test_sdk_still_cannot_send_reference_objects_so_the_client_sends_json(client: OpenAI, emulator) -> None:  # type: ignore[no-untyped-def]
    """openai 3.57 forces multipart for these and treats the object as a file.

    When this test fails, the SDK sends the objects itself: the JSON workaround in
    sora_tasks.core.api.operations (and VideosClient.create's image_url / file_id) can go.
    """
    attempts = [
        lambda: client.videos.edit(prompt="p", video={"id": "video_123"}),
        lambda: client.videos.extend(prompt="p", seconds="4", video={"id": "video_123"}),
        lambda: client.videos.create(prompt="p", input_reference={"image_url": "https://example.com/a.png"}),
        lambda: client.videos.create(prompt="p", input_reference={"file_id": "file-123"}),
    ]
    for attempt in attempts:
        with pytest.raises(RuntimeError, match="Expected entry at"):
            attempt()
    assert emulator.state.requests == []  # refused before anything was sent


# -- image references ------------------------------------------------------------------------


def test_image_url_data_and_http_and_file_id_references_through_json(  # type: ignore[no-untyped-def]
    client: OpenAI, emulator, image_server: str
) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png()).decode()
    uploaded = client.files.create(file=("ref.png", png(), "image/png"), purpose="vision")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(png()) and uploaded.purpose == "vision"
    references = [{"image_url": data_url}, {"image_url": f"{image_server}/ref.png"}, {"file_id": uploaded.id}]
    videos = [
        client.post(
            "/videos", body={"prompt": f"reference {n}", "size": "1280x720", "input_reference": ref}, cast_to=Video
        )
        for n, ref in enumerate(references)
    ]
    assert all(video.status == "queued" for video in videos)
    assert all(job.reference == png() for job in emulator.state.listing())
    colour = first_frame_colour(done(client, videos[1]))  # the fetched image shows through
    assert abs(colour[0] - BLUE[0]) < 30 and abs(colour[2] - BLUE[2]) < 30
    assert emulator.state.counters["POST file"] == 1 and emulator.state.jobs_created_by("create") == 3


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"file_id": "file-unknown"}, "no file with id 'file-unknown'"),
        ({"image_url": "{server}/missing.png"}, "could not fetch"),
        ({"image_url": "http://127.0.0.1:9/refused.png"}, "could not fetch"),
        ({"image_url": "data:image/png;base64,@@@"}, "could not be decoded"),
        ({"image_url": "ftp://example.com/a.png"}, "http(s) URL"),
        ({"image_url": "x", "file_id": "y"}, "exactly one of"),
        ({"url": "https://example.com/a.png"}, "Unknown parameter"),
    ],
)
def test_bad_reference_objects_are_400_naming_input_reference(  # type: ignore[no-untyped-def]
    client: OpenAI, emulator, image_server: str, reference: dict[str, str], message: str
) -> None:
    reference = {key: value.replace("{server}", image_server) for key, value in reference.items()}
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/videos", body={"prompt": "p", "size": "1280x720", "input_reference": reference}, cast_to=Video)
    body = caught.value.body
    assert isinstance(body, dict) and str(body["param"]).startswith("input_reference")
    assert message in body["message"] and body["type"] == "invalid_request_error"
    assert emulator.state.jobs_created == 0


def test_reference_objects_in_multipart_fields(emulator) -> None:  # type: ignore[no-untyped-def]
    """As the SDK would encode a dict in a form (``input_reference[image_url]``), and as a JSON string."""
    headers = {"Authorization": "Bearer k"}
    data_url = "data:image/png;base64," + base64.b64encode(png((720, 1280))).decode()
    bracketed = httpx.post(
        f"{emulator.base_url}/videos",
        headers=headers,
        data={"prompt": "bracketed", "input_reference[image_url]": data_url},
        files={"unused": ("x.txt", b"x", "text/plain")},  # forces multipart/form-data
    )
    as_json_text = httpx.post(
        f"{emulator.base_url}/videos",
        headers=headers,
        data={"prompt": "json text", "input_reference": json.dumps({"image_url": data_url})},
        files={"unused": ("x.txt", b"x", "text/plain")},
    )
    assert (bracketed.status_code, as_json_text.status_code) == (200, 200), (bracketed.text, as_json_text.text)
    assert [job.reference for job in emulator.state.listing()] == [png((720, 1280))] * 2


# -- the request log and the hosted-shutdown mode ---------------------------------------------------


@pytest.mark.usefixtures("shared_renders")
def test_request_log_names_each_endpoint(client: OpenAI, emulator, source_mp4: bytes) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.render_seconds = 30.0
    source = client.videos.create(prompt="named")
    client.videos.remix(source.id, prompt="named again")
    client.videos.create_character(name="n", video=("c.mp4", source_mp4, "video/mp4"))
    client.files.create(file=("r.png", png(), "image/png"), purpose="vision")
    client.videos.edit(prompt="edited", video=("s.mp4", source_mp4, "video/mp4"))
    client.videos.extend(prompt="extended", seconds="4", video=("s.mp4", source_mp4, "video/mp4"))
    assert [record.endpoint for record in api_requests(emulator)] == [
        "create",
        "remix",
        "character",
        "file",
        "edit",
        "extend",
    ]
    # What a test counts as paid: every job, by kind; requests by endpoint.
    state = emulator.state
    assert state.jobs_created == 4 and state.count("create") == 1
    assert [state.jobs_created_by(kind) for kind in ("create", "remix", "edit", "extend")] == [1, 1, 1, 1]


def test_hosted_shutdown_answers_the_videos_endpoints_404_invalid_url(client: OpenAI, emulator) -> None:  # type: ignore[no-untyped-def]
    emulator.state.config.hosted_shutdown = True
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.create(prompt="gone")
    assert caught.value.body == {
        "message": "Invalid URL (POST /v1/videos)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.NotFoundError, match=r"Invalid URL \(POST /v1/videos/extensions\)"):
        client.post("/videos/extensions", body={"prompt": "p", "seconds": "4", "video": {"id": "v"}}, cast_to=Video)
    with pytest.raises(openai.NotFoundError, match=r"Invalid URL \(GET /v1/videos\)"):
        client.videos.list()
    assert client.files.create(file=("r.png", png(), "image/png"), purpose="vision").id  # files stay
    assert emulator.state.jobs_created == 0


def test_console_script_documents_the_new_flags() -> None:
    from sora_tasks.emulator.cli import build_parser

    text = build_parser().format_help()
    assert "--hosted-shutdown" in text and "--fetch-timeout" in text and "extensions" in text
