"""Render real, playable H.264 MP4s (and their preview assets) for emulated jobs.

Text jobs get a colour field derived from the prompt with the prompt written on it
and a bar sweeping across; image jobs animate the reference with a slow zoom and a bar
sweeping along the bottom (so even a one-colour reference moves). Edits
re-encode the source video tinted and captioned with the edit's prompt; extensions
re-encode the source followed by a new segment that continues from its last frame,
as one H.264 stream. The output is exactly W x H, 24 fps, seconds x 24 frames, so
clients can check it. Frames are streamed to the encoder, never all held at once.

Defects (``DEFECTS``; see :mod:`.faults`) spoil a render the way a provider's broken one
is spoiled, while the job still completes: ``black`` frames, ``frozen`` (the first
frame throughout), ``short`` (half the frames), ``size`` (half the width and height)
and ``silent`` (an AAC track of silence).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FPS = 24
DEFECTS = ("black", "frozen", "short", "size", "silent")
AUDIO_RATE = 48_000
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


def _text_frames(prompt: str, width: int, height: int, count: int) -> Iterator[np.ndarray]:
    base = np.asarray(_text_backdrop(prompt, width, height))
    bar = max(8, width // 40)
    for index in range(count):
        frame = base.copy()
        x = int((width - bar) * index / max(1, count - 1))
        frame[: height // 8, x : x + bar] = 255
        yield frame


def _image_frames(reference: Image.Image, width: int, height: int, count: int) -> Iterator[np.ndarray]:
    source = reference.convert("RGB").resize((width, height))
    bar, strip = max(8, width // 40), max(4, height // 60)
    for index in range(count):
        # Zoom in by up to 10% over the clip: a cheap, visible "camera move".
        scale = 1.0 + 0.1 * index / max(1, count - 1)
        crop_w, crop_h = width / scale, height / scale
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
        frame = np.array(source.resize((width, height), Image.Resampling.BILINEAR, box=box))
        # A zoom into one flat colour shows nothing moving; a real video of it would.
        x = int((width - bar) * index / max(1, count - 1))
        frame[-strip:, x : x + bar] = 255
        yield frame


def _source_frames(path: Path, width: int, height: int, count: int) -> Iterator[np.ndarray]:
    """Exactly ``count`` frames of the video at ``path``, at 24 fps and W x H, decoded one at a time.

    Output slot i shows the source frame on screen at i/24 s, so a 24 fps source comes
    back frame for frame and any other rate is resampled; a short source holds its
    last frame.
    """
    emitted = 0
    last: np.ndarray | None = None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            pixels = frame.to_ndarray(width=width, height=height, format="rgb24")
            shown_at = float(frame.time or 0.0)
            while emitted < count and emitted / FPS < shown_at - 1e-6:
                yield pixels if last is None else last
                emitted += 1
            last = pixels
            if emitted >= count:
                return
    if last is None:
        raise ValueError(f"{path.name} holds no video frames")
    while emitted < count:
        yield last
        emitted += 1


def _caption_overlay(prompt: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The prompt's colour wash and a captioned band at the bottom: (RGB, alpha in 0..256)."""
    overlay = Image.new("RGBA", (width, height), (*_prompt_colour(prompt), 70))
    draw = ImageDraw.Draw(overlay)
    band = max(24, height // 10)
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 170))
    font = ImageFont.load_default(size=max(14, band // 2))
    caption = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    draw.text((width // 20, height - band + band // 4), caption, fill=(255, 255, 255, 255), font=font)
    pixels = np.asarray(overlay)
    alpha = pixels[:, :, 3:4].astype(np.uint16)
    return pixels[:, :, :3].astype(np.uint16) * alpha, 256 - alpha


def _overlaid(frames: Iterable[np.ndarray], overlay: tuple[np.ndarray, np.ndarray]) -> Iterator[np.ndarray]:
    premultiplied, keep = overlay
    for frame in frames:
        mixed = frame.astype(np.uint16)
        mixed *= keep
        mixed += premultiplied
        mixed >>= 8
        yield mixed.astype(np.uint8)


def _continuation_frames(last: np.ndarray, prompt: str, width: int, height: int, count: int) -> Iterator[np.ndarray]:
    """A new segment that starts on the source's last frame, captioned, with a bar sweeping below it."""
    base = next(_overlaid([last], _caption_overlay(prompt, width, height)))
    bar = max(8, width // 40)
    for index in range(count):
        frame = base.copy()
        x = int((width - bar) * index / max(1, count - 1))
        frame[-max(4, height // 60) :, x : x + bar] = 255
        yield frame


def _encode_mp4(
    frames: Iterable[np.ndarray],
    path: Path,
    width: int,
    height: int,
    keep: frozenset[int] = frozenset(),
    *,
    silent_seconds: float = 0.0,
) -> dict[int, np.ndarray]:
    """Encode ``frames``; returns the frames at the indices in ``keep`` (for the previews).

    ``silent_seconds``: an AAC track of that much silence goes beside the video.
    """
    kept: dict[int, np.ndarray] = {}
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, FPS)
        # One thread per encode: the emulator renders many jobs side by side.
        stream.codec_context.options = {"preset": "ultrafast", "threads": "1"}
        # Every stream is added before the first packet: the header names them all.
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="mono") if silent_seconds > 0 else None
        for index, pixels in enumerate(frames):
            if index in keep:
                kept[index] = pixels
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            _encode_silence(container, audio, silent_seconds)
    return kept


def _encode_silence(container: Any, audio: Any, seconds: float) -> None:
    step, total = 1024, int(seconds * AUDIO_RATE)  # AAC's frame size
    for start in range(0, total, step):
        silence = np.zeros((1, min(step, total - start)), np.float32)
        frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
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


def _preview_indices(count: int) -> frozenset[int]:
    return frozenset({count // 2, *(slot * count // SPRITE_FRAMES for slot in range(SPRITE_FRAMES))})


def _spoiled_size(size: str, defects: frozenset[str]) -> tuple[int, int]:
    """The size a render is made at: the one asked, or half of it (even) for the ``size`` defect."""
    width, height = (int(part) for part in size.split("x"))
    if "size" in defects:
        return max(16, width // 4 * 2), max(16, height // 4 * 2)
    return width, height


def _spoiled_count(seconds: int, defects: frozenset[str]) -> int:
    count = seconds * FPS
    return max(1, count // 2) if "short" in defects else count


def _spoiled(
    frames: Iterable[np.ndarray], width: int, height: int, count: int, defects: frozenset[str]
) -> Iterator[np.ndarray]:
    """``frames`` as a broken render shows them: all black, or the first one throughout."""
    if "black" in defects:
        black = np.zeros((height, width, 3), np.uint8)
        return (black for _ in range(count))
    if "frozen" in defects:
        first = next(iter(frames))
        return itertools.repeat(first, count)
    return iter(frames)


def _render(
    frames: Iterable[np.ndarray],
    directory: Path,
    size: str,
    count: int,
    pad_bytes: int,
    defects: frozenset[str] = frozenset(),
) -> RenderedAssets:
    width, height = _spoiled_size(size, defects)
    directory.mkdir(parents=True, exist_ok=True)
    video = directory / "video.mp4"
    frames = _spoiled(frames, width, height, count, defects)
    silence = count / FPS if "silent" in defects else 0.0
    kept = _encode_mp4(frames, video, width, height, _preview_indices(count), silent_seconds=silence)
    append_free_box(video, pad_bytes)

    middle = Image.fromarray(kept[count // 2])
    thumbnail = directory / "thumbnail.webp"
    middle.save(thumbnail, format="WEBP", quality=80)

    tile_w, tile_h = max(1, width // 4), max(1, height // 4)
    rows = -(-SPRITE_FRAMES // SPRITE_COLUMNS)
    sheet = Image.new("RGB", (tile_w * SPRITE_COLUMNS, tile_h * rows))
    for slot in range(SPRITE_FRAMES):
        tile = Image.fromarray(kept[slot * count // SPRITE_FRAMES]).resize((tile_w, tile_h))
        sheet.paste(tile, ((slot % SPRITE_COLUMNS) * tile_w, (slot // SPRITE_COLUMNS) * tile_h))
    spritesheet = directory / "spritesheet.jpg"
    sheet.save(spritesheet, format="JPEG", quality=80)
    return RenderedAssets(video=video, thumbnail=thumbnail, spritesheet=spritesheet)


def render_job(
    directory: Path,
    *,
    prompt: str,
    size: str,
    seconds: int,
    reference: bytes | None = None,
    pad_bytes: int = 0,
    defects: frozenset[str] = frozenset(),
) -> RenderedAssets:
    """A create's video; ``defects`` spoil it (see the module docstring)."""
    width, height = _spoiled_size(size, defects)
    count = _spoiled_count(seconds, defects)
    if reference is not None:
        frames = _image_frames(Image.open(io.BytesIO(reference)), width, height, count)
    else:
        frames = _text_frames(prompt, width, height, count)
    return _render(frames, directory, size, count, pad_bytes, defects)


def render_from_source(
    directory: Path,
    *,
    mode: Literal["edit", "extend"],
    prompt: str,
    size: str,
    source: Path,
    source_seconds: int,
    seconds: int,
    pad_bytes: int = 0,
    defects: frozenset[str] = frozenset(),
) -> RenderedAssets:
    """An edit (the source, tinted and captioned) or an extension (the source, then a new segment).

    ``seconds`` is the output's whole length: for an extension, the source's
    ``source_seconds`` followed by ``seconds - source_seconds`` new ones. ``defects`` spoil it.
    """
    width, height = _spoiled_size(size, defects)
    count = _spoiled_count(seconds, defects)
    if mode == "edit":
        frames = _overlaid(_source_frames(source, width, height, count), _caption_overlay(prompt, width, height))
    else:
        kept = min(source_seconds * FPS, count)
        frames = _extended(source, prompt, width, height, kept, count)
    return _render(frames, directory, size, count, pad_bytes, defects)


def _extended(source: Path, prompt: str, width: int, height: int, kept: int, count: int) -> Iterator[np.ndarray]:
    last: np.ndarray | None = None
    for last in _source_frames(source, width, height, kept):
        yield last
    assert last is not None
    yield from _continuation_frames(last, prompt, width, height, count - kept)
