"""What a person sees while a video renders: a bar on a terminal, status lines elsewhere, a summary.

Everything here goes to stderr; stdout carries only the result (a URI, an id, JSON), so
``$(sora-video ...)`` keeps working in scripts.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Literal, Protocol

from ..core.summary import human_bytes

Mode = Literal["bar", "lines", "quiet"]


class DeliveredVideo(Protocol):
    """What both engines return for a delivered video (the core's ``Delivered``, the flows' ``VideoResult``)."""

    @property
    def uri(self) -> str: ...
    @property
    def bytes(self) -> int: ...
    @property
    def duration(self) -> str | int: ...
    @property
    def resolution(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def video_id(self) -> str: ...


# Plain status lines appear on a status change and at least every this many points.
LINE_STEP = 25


def choose_mode(*, quiet: bool, stream: Any = None) -> Mode:
    stream = stream or sys.stderr
    if quiet:
        return "quiet"
    return "bar" if stream.isatty() else "lines"


class Reporter:
    """Shows a job's progress; ``update`` takes the SDK's ``Video`` as each poll sees it."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.started = time.monotonic()
        self.video_id: str | None = None
        self._bar: Any = None
        self._task: Any = None
        self._last: tuple[str, int] = ("", -LINE_STEP)
        self._after: list[str] = []  # lines that wait until the bar is gone

    def __enter__(self) -> Reporter:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.fields[status]:<11}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[video_id]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("video", total=100, status="starting", video_id="")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        for line in self._after:
            self.say(line)
        self._after.clear()

    def say(self, message: str) -> None:
        """A line for the person, above the bar if one is showing."""
        if self.mode == "quiet":
            return
        if self._bar is not None:
            self._bar.console.print(message, highlight=False, markup=False)
        else:
            # Not print(): inside a flow run Prefect's log_prints turns prints into log records.
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    def submitted(self, video_id: str, *, reused: bool = False) -> None:
        self.video_id = video_id
        if reused:
            self.say(
                f"{video_id}: this request was paid for earlier; following that job (--request-id makes a new one)"
            )
        if self._bar is not None:
            self._bar.update(self._task, status="queued", video_id=video_id)
        elif self.mode == "lines" and not reused:
            self.say(f"{video_id}: submitted")

    def update(self, video: Any) -> None:
        self.video_id = video.id
        status, progress = str(video.status), int(video.progress or 0)
        if self._bar is not None:
            self._bar.update(self._task, completed=progress, status=status, video_id=video.id)
            return
        if self.mode != "lines":
            return
        last_status, last_progress = self._last
        if status != last_status or progress - last_progress >= LINE_STEP:
            self._last = (status, progress)
            self.say(f"{video.id}: {status} {progress}% ({time.monotonic() - self.started:.1f} s)")

    def rejected(self, error: Any, retries_left: int) -> None:
        """A video failed the quality check and a retry is paid for (the last rejection is the error itself)."""
        self.say(
            f"{error}; paying for a new job ({retries_left} quality retr{'y' if retries_left == 1 else 'ies'} left)"
        )

    def delivered(self, result: DeliveredVideo) -> None:
        """The one-line summary: destination, size, duration, resolution, model, video id, time, quality.

        A video delivered although it failed the quality check (``--quality warn``) says so
        on a line of its own, as do the jobs a quality retry rejected before it.
        """
        line = (
            f"delivered {result.uri}: {human_bytes(result.bytes)}, {result.duration} s {result.resolution} "
            f"{result.model}, video {result.video_id}, in {time.monotonic() - self.started:.1f} s"
        )
        lines = [line, *quality_lines(result)]
        if self._bar is not None:
            self._after.extend(lines)
        else:
            for text in lines:
                self.say(text)


def quality_lines(result: Any) -> list[str]:
    """What the quality check said of a delivered video, when there is something to say."""
    lines = []
    report = getattr(result, "quality", None)
    if report and not report.get("passed", True):
        failed = "; ".join(f"{name}: {detail}" for name, detail in report.get("failures", {}).items())
        lines.append(f"warning: video {result.video_id} failed the quality check ({failed}); delivered anyway")
    rejected = list(getattr(result, "rejected", ()) or ())
    if rejected:
        lines.append(
            f"after rejecting {', '.join(rejected)} (failed the quality check; each kept beside the output "
            "as .rejected.mp4)"
        )
    return lines
