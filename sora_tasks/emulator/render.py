"""Render real, playable H.264 MP4s (and their preview assets) for emulated jobs.

Text jobs get a colour field derived from the prompt with the prompt written on it
and a bar sweeping across; image jobs animate the reference with a slow zoom. The
output is exactly W x H, 24 fps, seconds x 24 frames, so clients can check it.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FPS = 24
SPRITE_COLUMNS = 5
SPRITE_FRAMES = 10


@dataclass(frozen=True)
class RenderedAssets:
    video: Path
    thumbnail: Path
    spritesheet: Path


def _prompt_colour(prompt: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(prompt.encode()).digest()
    # Keep colours mid-bright so the white caption stays readable.
    return (60 + digest[0] % 140, 60 + digest[1] % 140, 60 + digest[2] % 140)


def _text_backdrop(prompt: str, width: int, height: int) -> Image.Image:
    top = np.array(_prompt_colour(prompt), dtype=np.float32)
    bottom = top * 0.35
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    gradient = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
    image = Image.fromarray(np.broadcast_to(gradient, (height, width, 3)).copy())
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(16, height // 18))
    caption = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    draw.text((width // 20, height // 2), caption, fill=(255, 255, 255), font=font)
    return image


def _text_frames(prompt: str, width: int, height: int, count: int) -> list[np.ndarray]:
    base = np.asarray(_text_backdrop(prompt, width, height))
    bar = max(8, width // 40)
    frames = []
    for index in range(count):
        frame = base.copy()
        x = int((width - bar) * index / max(1, count - 1))
        frame[: height // 8, x : x + bar] = 255
        frames.append(frame)
    return frames


def _image_frames(reference: Image.Image, width: int, height: int, count: int) -> list[np.ndarray]:
    source = reference.convert("RGB").resize((width, height))
    frames = []
    for index in range(count):
        # Zoom in by up to 10% over the clip: a cheap, visible "camera move".
        scale = 1.0 + 0.1 * index / max(1, count - 1)
        crop_w, crop_h = width / scale, height / scale
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        frames.append(np.asarray(source.resize((width, height), Image.Resampling.BILINEAR, box=box)))
    return frames


def _encode_mp4(frames: list[np.ndarray], path: Path, width: int, height: int) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, FPS)
        # One thread per encode: the emulator renders many jobs side by side.
        stream.codec_context.options = {"preset": "ultrafast", "threads": "1"}
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def append_free_box(path: Path, pad_bytes: int) -> None:
    """Grow an MP4 by a valid top-level `free` box (players skip it)."""
    if pad_bytes <= 0:
        return
    header_size = 16 if pad_bytes + 8 > 0xFFFFFFFF else 8
    payload = max(0, pad_bytes - header_size)
    with path.open("ab") as handle:
        if header_size == 8:
            handle.write(struct.pack(">I4s", payload + 8, b"free"))
        else:
            handle.write(struct.pack(">I4sQ", 1, b"free", payload + 16))
        chunk = b"\0" * (1 << 20)
        remaining = payload
        while remaining:
            step = min(remaining, len(chunk))
            handle.write(chunk[:step])
            remaining -= step


def render_job(
    directory: Path,
    *,
    prompt: str,
    size: str,
    seconds: int,
    reference: bytes | None = None,
    pad_bytes: int = 0,
) -> RenderedAssets:
    width, height = (int(part) for part in size.split("x"))
    count = seconds * FPS
    if reference is not None:
        frames = _image_frames(Image.open(io.BytesIO(reference)), width, height, count)
    else:
        frames = _text_frames(prompt, width, height, count)
    directory.mkdir(parents=True, exist_ok=True)
    video = directory / "video.mp4"
    _encode_mp4(frames, video, width, height)
    append_free_box(video, pad_bytes)

    middle = Image.fromarray(frames[count // 2])
    thumbnail = directory / "thumbnail.webp"
    middle.save(thumbnail, format="WEBP", quality=80)

    tile_w, tile_h = max(1, width // 4), max(1, height // 4)
    rows = -(-SPRITE_FRAMES // SPRITE_COLUMNS)
    sheet = Image.new("RGB", (tile_w * SPRITE_COLUMNS, tile_h * rows))
    for slot in range(SPRITE_FRAMES):
        tile = Image.fromarray(frames[slot * count // SPRITE_FRAMES]).resize((tile_w, tile_h))
        sheet.paste(tile, ((slot % SPRITE_COLUMNS) * tile_w, (slot // SPRITE_COLUMNS) * tile_h))
    spritesheet = directory / "spritesheet.jpg"
    sheet.save(spritesheet, format="JPEG", quality=80)
    return RenderedAssets(video=video, thumbnail=thumbnail, spritesheet=spritesheet)
