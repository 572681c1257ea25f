"""A Videos API server that says whatever a test tells it to: hostile ids, huge or fake bodies.

Real HTTP on 127.0.0.1 (``http.server`` in a thread), spoken to through the real SDK. Every
request is recorded with its method, path and ``Authorization`` header, so a test can tell
whether the key ever reached it. It keeps no jobs: each answer is built from its settings.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import av
import numpy as np


def real_mp4(seconds: float = 4.0, size: tuple[int, int] = (1280, 720), fps: int = 24) -> bytes:
    """A real H.264 MP4 (a gradient moving across the picture: cheap to encode, never frozen or black)
    made with PyAV, as long and as large as the server's answers say its jobs are."""
    out = io.BytesIO()
    ramp = np.linspace(40, 220, size[0], dtype=np.float32)
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(int(seconds * fps)):
            row = np.roll(ramp, index * 16).astype(np.uint8)
            picture = np.broadcast_to(row[None, :, None], (size[1], size[0], 3)).copy()
            frame = av.VideoFrame.from_ndarray(picture)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class HostileServer:
    """What the server answers; change the fields between calls."""

    base_url: str = ""
    # The id a create answers with, and the jobs a list page shows.
    job_id: str = "video_fine"
    listed_ids: list[str] = field(default_factory=list)
    model: str = "sora-2"
    # The body of GET .../content: bytes, or a size in bytes to stream (chunked, zeros).
    content: bytes | int = b""
    content_length: int | None = None  # a Content-Length to claim (None: the real one)
    status_code: int = 200  # for every POST /videos (401 to refuse the key, 500 after "committing")
    seen: list[Seen] = field(default_factory=list)

    def requests_to(self, path_part: str) -> list[Seen]:
        return [request for request in self.seen if path_part in request.path]

    def video(self, video_id: str, status: str = "completed") -> dict[str, Any]:
        return {
            "id": video_id,
            "object": "video",
            "status": status,
            "model": self.model,
            "progress": 100 if status == "completed" else 0,
            "seconds": "4",
            "size": "1280x720",
            "prompt": "hostile",
            "created_at": int(time.time()),
            "completed_at": int(time.time()) if status == "completed" else None,
            "expires_at": int(time.time()) + 3600,
            "error": None,
            "remixed_from_video_id": None,
        }


def _handler(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _record(self) -> None:
            server.seen.append(Seen(self.command, self.path, self.headers.get("Authorization")))

        def _json(self, body: Any, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self._record()
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if server.status_code != 200:
                self._json({"error": {"message": "refused", "type": "invalid_request_error"}}, server.status_code)
                return
            self._json(server.video(server.job_id, status="queued"))

        def do_DELETE(self) -> None:
            self._record()
            self._json({"id": "x", "object": "video.deleted", "deleted": True})

        def do_GET(self) -> None:
            self._record()
            path = self.path.split("?", 1)[0]
            if path.endswith("/videos"):
                data = [server.video(video_id) for video_id in server.listed_ids]
                self._json({"object": "list", "data": data, "has_more": False})
            elif "/content" in path:
                self._content()
            elif "/videos/" in path:
                self._json(server.video(path.rsplit("/videos/", 1)[1]))
            else:
                self._json({"error": {"message": "no such route"}}, 404)

        def _content(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            if isinstance(server.content, bytes):
                self.send_header("Content-Length", str(server.content_length or len(server.content)))
                self.end_headers()
                self.wfile.write(server.content)
                return
            # A body streamed in chunks with no length: a server that never says how much is coming.
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            left, chunk = server.content, b"\0" * (256 * 1024)
            try:
                while left > 0:
                    part = chunk[: min(len(chunk), left)]
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    left -= len(part)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what a cap is for

    return Handler


@contextmanager
def hostile_server() -> Iterator[HostileServer]:
    state = HostileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, name="hostile-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
