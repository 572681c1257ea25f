"""A small Videos API server that is not the emulator: it answers ``completed`` with videos it encodes itself.

Some are broken the way a provider's renders break (all black, one frozen frame, half the
length asked) and one is good; the prompt says which (``black``, ``frozen``, ``half``,
``good``), and ``A then B`` in a prompt serves A to its first job and B to every later one
(a retry that passes). It speaks what openai-python sends and parses: multipart creates,
retrieve, list, content (no thumbnail or spritesheet). Every create is counted.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import numpy as np

KINDS = ("black", "frozen", "half", "good")
FPS = 24


def encode(path: Path, kind: str, *, width: int = 1280, height: int = 720, seconds: int = 4) -> Path:
    """An H.264 MP4 as a broken (or good) render would be: ``kind`` is one of ``KINDS``."""
    count = seconds * FPS // (2 if kind == "half" else 1)
    rng = np.random.default_rng(7)
    # Coarse random blocks: a picture with detail, which a moving video shifts every frame.
    still = (rng.random((height // 16, width // 16, 3)) * 200 + 30).astype(np.uint8).repeat(16, 0).repeat(16, 1)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        stream.codec_context.options = {"preset": "ultrafast"}
        for index in range(count):
            if kind == "black":
                pixels = np.zeros((height, width, 3), np.uint8)
            elif kind == "frozen":
                pixels = still
            else:
                pixels = np.roll(still, 8 * index, axis=1)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@dataclass
class OddVideos:
    """The server's state: its videos by kind, its jobs, and what was asked of it."""

    videos: dict[str, bytes]
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # video id -> the kind it was served
    creates: Counter[str] = field(default_factory=Counter)  # by prompt
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    @property
    def jobs_created(self) -> int:
        return sum(self.creates.values())

    def create(self, fields: dict[str, str]) -> dict[str, Any]:
        prompt = fields.get("prompt", "")
        sequence = [kind for part in prompt.split(" then ") for kind in KINDS if kind in part.split()]
        with self.lock:
            made = self.creates[prompt]
            self.creates[prompt] += 1
            video_id = "video_" + secrets.token_hex(12)
            now = int(time.time())
            job = {
                "id": video_id,
                "object": "video",
                "created_at": now,
                "completed_at": now,
                "expires_at": now + 3600,
                "status": "completed",
                "model": fields.get("model", "sora-2"),
                "progress": 100,
                "prompt": prompt,
                "seconds": fields.get("seconds", "4"),
                "size": fields.get("size", "1280x720"),
                "error": None,
                "remixed_from_video_id": None,
            }
            self.jobs[video_id] = job
            self.kinds[video_id] = sequence[min(made, len(sequence) - 1)] if sequence else "good"
        return job


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """A create's fields, sent as multipart (as openai-python does) or JSON."""
    if "json" in content_type:
        return {key: str(value) for key, value in json.loads(body or b"{}").items()}
    found = re.findall(rb'name="([^"]+)"\r\n(?:[^\r\n]+\r\n)*\r\n(.*?)\r\n--', body, re.S)
    return {name.decode(): value.decode("utf-8", "replace") for name, value in found}


@contextmanager
def odd_server(directory: Path) -> Iterator[OddVideos]:
    """The server on 127.0.0.1; ``.url`` is its ``/v1`` base URL."""
    state = OddVideos({kind: encode(directory / f"{kind}.mp4", kind).read_bytes() for kind in KINDS})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._send(status, json.dumps(value).encode())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/videos":
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            self._json(200, state.create(form_fields(self.headers.get("Content-Type", ""), body)))

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            parts = path.strip("/").split("/")
            if parts == ["v1", "videos"]:
                self._json(200, {"object": "list", "data": list(state.jobs.values()), "has_more": False})
                return
            if len(parts) >= 3 and parts[:2] == ["v1", "videos"] and parts[2] in state.jobs:
                video_id = parts[2]
                if len(parts) == 3:
                    self._json(200, state.jobs[video_id])
                elif parts[3:] == ["content"] and "variant=" not in query.replace("variant=video", ""):
                    self._send(200, state.videos[state.kinds[video_id]], "video/mp4")
                else:
                    self._json(404, {"error": {"message": "no such variant"}})
                return
            self._json(404, {"error": {"message": f"no video at {self.path}"}})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
