"""Is a finished video what was asked for? A bounded, streaming look at the downloaded MP4.

A provider can answer ``completed`` with a video that is all black, one still frame,
half the length asked, another size, or silent. Those are paid for all the same, so
they are caught here, on the downloaded file, before it is stored as the output.

The file is read once, packet by packet: every video packet is counted (frames,
duration), but only reference frames are decoded (``skip_frame=NONREF``, no loop
filter: the picture is only compared, never shown), and of those a few per second are
scaled down to a small grey picture in C (``reformat``), so memory stays a few decoded
frames whatever the video's length or size. Audio is decoded only until a sound is heard.

Plain data and numbers only (no storage, no API): the policy is applied by the callers
(``core.jobs.quality``), which keep a rejected file and decide whether to retry.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequestError

QualityMode = Literal["fail", "warn", "off", "retry"]
QUALITY_MODES: tuple[QualityMode, ...] = ("fail", "warn", "off", "retry")
# Each retry is another paid job: a typo must not buy a dozen.
MAX_RETRIES = 5
QUALITY_HELP = f"fail, warn, off or retry=N (N from 1 to {MAX_RETRIES}; retry:N is accepted too)"
_RETRY = re.compile(r"retry(?:\s*[=:]\s*(\d+))?")

# The checks in the order they are reported; the first failed one names the error's code.
CHECKS = ("container", "size", "fps", "duration", "black", "frozen", "audio", "silent", "reference")


def parse_quality(value: object) -> tuple[QualityMode, int]:
    """``fail``, ``warn``, ``off``, ``retry=N`` (or ``retry:N``; ``retry`` alone is ``retry=1``) -> (mode, retries)."""
    text = str(value).strip().lower()
    if text in ("fail", "warn", "off"):
        return text, 0  # type: ignore[return-value]
    match = _RETRY.fullmatch(text)
    if match is not None:
        retries = int(match.group(1) or 1)
        if 1 <= retries <= MAX_RETRIES:
            return "retry", retries
    raise InvalidRequestError(f"quality must be one of {QUALITY_HELP}; got {value!r}")


def normalize_quality(value: object) -> str:
    """The one spelling of a quality setting: ``fail``, ``warn``, ``off`` or ``retry=N``."""
    mode, retries = parse_quality(value)
    return f"retry={retries}" if mode == "retry" else mode


class QualityThresholds(BaseModel):
    """The limits a video must keep; the defaults pass real footage and catch broken renders."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_black_fraction: float = Field(
        default=0.5, ge=0, le=1, description="Share of the video's length that may be black frames."
    )
    max_black_run_seconds: float = Field(default=2.0, ge=0, description="Longest black stretch allowed, in seconds.")
    max_frozen_fraction: float = Field(
        default=0.5, ge=0, le=1, description="Share of the video's length that may be one unmoving picture."
    )
    max_frozen_run_seconds: float = Field(
        default=3.0, ge=0, description="Longest stretch without any change in the picture, in seconds."
    )
    duration_tolerance_frames: int = Field(
        default=2, ge=0, description="How many frames the video may be longer or shorter than the duration asked."
    )
    min_fps: float = Field(default=8.0, ge=0, description="Lowest frame rate accepted.")
    require_audio: bool = Field(
        default=False, description="Fail a video without an audio track (off: many providers render none)."
    )
    fail_on_silent_audio: bool = Field(
        default=False, description="Fail a video whose audio track is silence throughout (off: reported only)."
    )
    min_reference_similarity: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description="Least similarity (-1..1) of the first frame to the reference image; empty: reported only.",
    )
    black_pixel_level: float = Field(
        default=0.10, ge=0, le=1, description="A pixel darker than this share of full brightness counts as black."
    )
    black_pixel_share: float = Field(
        default=0.98, gt=0, le=1, description="A frame is black when at least this share of its pixels is."
    )
    freeze_tolerance: int = Field(
        default=2, ge=0, le=255, description="Two samples are the same picture when no scaled-down pixel differs more."
    )
    samples_per_second: float = Field(default=6.0, gt=0, description="Frames looked at per second of video.")
    max_samples: int = Field(default=300, ge=2, description="At most this many frames are looked at, however long.")


@dataclass(frozen=True)
class QualityPolicy:
    """What to do with a video that fails: ``fail`` (keep it aside, raise), ``warn`` (deliver, say so),
    ``off`` (no check), ``retry`` (keep it aside, pay for up to ``retries`` new jobs)."""

    mode: QualityMode = "fail"
    retries: int = 0
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)

    @classmethod
    def of(cls, setting: object = "fail", thresholds: QualityThresholds | None = None) -> QualityPolicy:
        mode, retries = parse_quality(setting)
        return cls(mode, retries, thresholds or QualityThresholds())

    @property
    def checks(self) -> bool:
        return self.mode != "off"

    @property
    def rejects(self) -> bool:
        """A failed video is kept aside rather than delivered."""
        return self.mode in ("fail", "retry")

    @property
    def setting(self) -> str:
        return f"retry={self.retries}" if self.mode == "retry" else self.mode


@dataclass(frozen=True)
class Expectation:
    """What was asked: the size, the length (None: not known) and the fitted reference image, if any."""

    width: int
    height: int
    seconds: float | None = None
    reference: bytes | None = None

    @classmethod
    def of(cls, size: str, seconds: str | int | float | None = None, reference: bytes | None = None) -> Expectation:
        width, _, height = str(size).partition("x")
        given = str(seconds) if seconds is not None else ""
        return cls(
            int(width) if width.isdigit() else 0,
            int(height) if height.isdigit() else 0,
            float(given) if given.replace(".", "", 1).isdigit() else None,
            reference,
        )


@dataclass(frozen=True)
class QualityReport:
    """Every figure measured, the enforced checks that failed, and report-only findings."""

    figures: dict[str, Any]
    failures: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """One line a person reads: what the video is, and how much of it is black or frozen."""
        f = self.figures
        if "width" not in f:
            return "; ".join(self.failures.values()) or "not inspected"
        parts = [
            f"{f.get('codec', '?')} {f['width']}x{f['height']} {_number(f.get('fps', 0))} fps, "
            f"{f.get('frames', 0)} frames ({f.get('duration', 0):.2f} s)",
            f"black {_percent(f.get('black_fraction', 0.0))}, frozen {_percent(f.get('frozen_fraction', 0.0))}",
            f"audio {f.get('audio', 'none')}",
        ]
        if f.get("reference_similarity") is not None:
            parts.append(f"first frame vs reference {f['reference_similarity']:.2f}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.ok,
            "figures": dict(self.figures),
            "failures": dict(self.failures),
            **({"notes": dict(self.notes)} if self.notes else {}),
        }


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def inspect_video(
    path: str | Path, expected: Expectation, thresholds: QualityThresholds | None = None
) -> QualityReport:
    """Measure the MP4 at ``path`` against ``expected`` and ``thresholds`` (see the module docstring)."""
    import av

    limits = thresholds or QualityThresholds()
    try:
        with av.open(str(path)) as container:
            figures = _measure(container, expected, limits)
    except (av.error.FFmpegError, OSError, ValueError) as error:
        return QualityReport({}, {"container": f"not a decodable video ({error})"})
    return _judge(figures, expected, limits)


@dataclass
class _Samples:
    """The scaled-down grey samples' verdicts: (time, black, same picture as the previous sample)."""

    times: list[float] = field(default_factory=list)
    black: list[bool] = field(default_factory=list)
    frozen: list[bool] = field(default_factory=list)
    first: Any = None
    previous: Any = None


def _measure(container: Any, expected: Expectation, limits: QualityThresholds) -> dict[str, Any]:
    import numpy as np
    from av.video.reformatter import VideoReformatter

    video = next(iter(container.streams.video), None)
    if video is None:
        raise ValueError("the file holds no video stream")
    audio = next(iter(container.streams.audio), None)
    context = video.codec_context
    figures: dict[str, Any] = {
        "codec": context.name,
        "width": int(context.width),
        "height": int(context.height),
        "fps": round(float(video.average_rate or video.guessed_rate or 0), 3),
    }
    # Only compared, never shown: skip the frames nothing refers to, and the deblocking filter.
    context.skip_frame = "NONREF"
    if context.name == "h264":
        context.options = {"skip_loop_filter": "all", "flags2": "+fast"}
    context.thread_count = 1  # CPU seconds, not wall time, are what a busy worker pays for
    known = float(video.duration * video.time_base) if video.duration and video.time_base else None
    estimate = known or expected.seconds or 0.0
    interval = max(1.0 / limits.samples_per_second, estimate / limits.max_samples)
    width = 64
    height = max(8, round(width * figures["height"] / max(1, figures["width"])) // 2 * 2)
    level = limits.black_pixel_level * 255
    # One scaler for every sample (a new one per frame was most of the cost), averaging
    # whole areas: noise cancels out, so a still picture compares equal to itself.
    scaler = VideoReformatter()
    samples = _Samples()
    next_sample = -math.inf
    frames, first_pts, end_pts = 0, None, None
    peak, heard = 0.0, False
    streams = [video] if audio is None else [video, audio]
    for packet in container.demux(*streams):
        if packet.stream.index == video.index:
            if packet.size and packet.pts is not None:
                frames += 1
                first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                end = packet.pts + (packet.duration or 0)
                end_pts = end if end_pts is None else max(end_pts, end)
            for frame in packet.decode():
                at = float(frame.time or 0.0)
                if at + 1e-6 < next_sample or len(samples.times) >= limits.max_samples:
                    continue
                next_sample = at + interval
                small = scaler.reformat(frame, width=width, height=height, format="gray", interpolation="AREA")
                grey = small.to_ndarray()
                black = bool(np.count_nonzero(grey <= level) >= limits.black_pixel_share * grey.size)
                still = (
                    samples.previous is not None
                    and not (black and samples.black[-1])
                    and int(np.abs(grey.astype(np.int16) - samples.previous).max()) <= limits.freeze_tolerance
                )
                samples.times.append(at)
                samples.black.append(black)
                samples.frozen.append(still)
                samples.previous = grey.astype(np.int16)
                if samples.first is None:
                    samples.first = grey
        elif not heard:
            for sound in packet.decode():
                peak = max(peak, _peak(sound))
            heard = peak > _SILENCE
    if frames == 0 or not samples.times:
        raise ValueError("the video stream holds no decodable frame")
    base = video.time_base
    if first_pts is not None and end_pts is not None and base and end_pts > first_pts:
        duration = float((end_pts - first_pts) * base)
    else:
        duration = frames / figures["fps"] if figures["fps"] else 0.0
    figures.update(frames=frames, duration=round(duration, 3), samples=len(samples.times))
    figures.update(_runs(samples, duration))
    if audio is None:
        figures["audio"] = "none"
    else:
        figures["audio"] = "present" if heard else "silent"
        figures["audio_peak_dbfs"] = round(20 * math.log10(peak), 1) if peak > 0 else None
    if expected.reference is not None:
        figures["reference_similarity"] = _similarity(samples.first, expected.reference)
    return figures


# Peak amplitude (of full scale) below which a whole track counts as silence: about -60 dBFS.
_SILENCE = 0.001


def _peak(sound: Any) -> float:
    """The largest sample of a decoded audio frame, as a share of full scale."""
    import numpy as np

    samples = sound.to_ndarray()
    if samples.size == 0:
        return 0.0
    name = sound.format.name
    if name.startswith(("flt", "dbl")):
        return float(np.abs(samples).max())
    if name.startswith("u8"):
        return float(np.abs(samples.astype(np.int16) - 128).max()) / 128
    scale = float(np.iinfo(samples.dtype).max)
    return float(np.abs(samples.astype(np.float64)).max()) / scale


def _runs(samples: _Samples, duration: float) -> dict[str, float]:
    """Black and frozen shares of the length, and their longest stretches.

    Sample i stands for the time until sample i+1 (the last one, until the end). A black
    sample's span is black; a sample showing the previous sample's picture makes the
    span between them frozen (and, for the last one, the tail too).
    """
    ends = [*samples.times[1:], max(duration, samples.times[-1])]
    spans = [max(0.0, end - start) for start, end in zip(samples.times, ends, strict=True)]
    black = _stretches(spans, samples.black)
    # The span before sample i is frozen when sample i repeats it; the last sample's tail too.
    frozen_flags = [*samples.frozen[1:], samples.frozen[-1]]
    frozen = _stretches(spans, frozen_flags)
    whole = duration or sum(spans) or 1.0
    return {
        "black_fraction": round(min(1.0, black[0] / whole), 3),
        "longest_black_seconds": round(black[1], 2),
        "frozen_fraction": round(min(1.0, frozen[0] / whole), 3),
        "longest_frozen_seconds": round(frozen[1], 2),
    }


def _stretches(spans: list[float], flags: list[bool]) -> tuple[float, float]:
    total = longest = current = 0.0
    for span, flag in zip(spans, flags, strict=True):
        current = current + span if flag else 0.0
        total += span if flag else 0.0
        longest = max(longest, current)
    return total, longest


def _similarity(first: Any, reference: bytes) -> float | None:
    """How alike the first frame and the reference are, on the same small grey picture.

    Pearson correlation of the pixels (-1..1); for a flat picture (one colour, where a
    correlation means nothing) one minus the mean difference, as a share of full scale.
    """
    import numpy as np
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(reference)).convert("L")
    except (OSError, ValueError):
        return None
    height, width = first.shape
    picture = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)
    frame = first.astype(np.float64)
    if picture.std() < 1.0 or frame.std() < 1.0:
        return round(1.0 - float(np.abs(picture - frame).mean()) / 255, 3)
    return round(float(np.corrcoef(picture.ravel(), frame.ravel())[0, 1]), 3)


def _judge(figures: dict[str, Any], expected: Expectation, limits: QualityThresholds) -> QualityReport:
    failures: dict[str, str] = {}
    notes: dict[str, str] = {}
    size = f"{figures['width']}x{figures['height']}"
    if (
        expected.width
        and expected.height
        and (figures["width"], figures["height"])
        != (
            expected.width,
            expected.height,
        )
    ):
        failures["size"] = f"{size}, asked {expected.width}x{expected.height}"
    fps = float(figures["fps"])
    if fps < limits.min_fps:
        failures["fps"] = f"{_number(fps)} fps, below {_number(limits.min_fps)}"
    if expected.seconds is not None:
        tolerance = limits.duration_tolerance_frames / fps if fps else 0.1
        if abs(figures["duration"] - expected.seconds) > tolerance + 1e-3:
            failures["duration"] = (
                f"{figures['duration']:.2f} s ({figures['frames']} frames), asked {_number(expected.seconds)} s "
                f"(tolerance {limits.duration_tolerance_frames} frames)"
            )
    for check, limit_fraction, limit_run in (
        ("black", limits.max_black_fraction, limits.max_black_run_seconds),
        ("frozen", limits.max_frozen_fraction, limits.max_frozen_run_seconds),
    ):
        fraction, run = figures[f"{check}_fraction"], figures[f"longest_{check}_seconds"]
        if fraction > limit_fraction or run > limit_run:
            failures[check] = (
                f"{_percent(fraction)} of the video, longest {run:.1f} s "
                f"(limits {_percent(limit_fraction)}, {limit_run:g} s)"
            )
    if figures["audio"] == "none":
        (failures if limits.require_audio else notes)["audio"] = "no audio track"
    elif figures["audio"] == "silent":
        (failures if limits.fail_on_silent_audio else notes)["silent"] = "the audio track is silent throughout"
    similarity = figures.get("reference_similarity")
    least = limits.min_reference_similarity
    if similarity is not None and least is not None and similarity < least:
        failures["reference"] = f"first frame {similarity:.2f} like the reference, below {least:g}"
    ordered = {name: failures[name] for name in CHECKS if name in failures}
    return QualityReport(figures, ordered, notes)
