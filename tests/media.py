"""Helpers that look inside produced media with PyAV and Pillow."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av


@dataclass
class VideoProbe:
    codec: str
    width: int
    height: int
    fps: float
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def probe_mp4(data: bytes | Path) -> VideoProbe:
    source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    with av.open(source) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return VideoProbe(
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(stream.average_rate),
            frames=frames,
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def api_requests(emulator: Any) -> list[Any]:
    """The emulator's requests of the Videos API itself; a proxy's health probes (GET /v1/models) are not."""
    return [record for record in emulator.state.requests if record.endpoint != "other"]
