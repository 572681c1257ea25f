"""`sora-video takes`: the terminal's side of a review. It shows the takes and reads the pick.

A number keeps that take, ``r N <note>`` remixes take N per the note, ``x`` rejects them
all. Without Prefect the answer goes straight to the core's review; with a Prefect API
the run waits paused (its page has the same form) and the answer resumes it, so the
person decides on whichever side comes first and the other stops asking.
"""

from __future__ import annotations

import queue
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from ..core.jobs.review import Decided, Decision, Moment, Take, Waiting, parse_answer, subscribe

PROMPT = "keep which take? a number, `r N <note>` to remix take N, `x` to reject them all: "
# How often a wait for a line looks at its deadline and at a decision made elsewhere.
READ_STEP = 0.25


def on_a_terminal(stream: TextIO | None = None) -> bool:
    """Whether a person can answer here (stdin is a terminal)."""
    stream = stream if stream is not None else sys.stdin
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def show_takes(
    takes: list[Take], round_number: int, remixes_left: int, *, problem: str = "", url: str | None = None
) -> None:
    """The takes as lines: number, length, video id, how it was made, and where its previews are."""
    if problem:
        say(f"that answer was unclear: {problem}")
    say(f"round {round_number}: {len(takes)} takes" + (f"; or decide at {url}" if url else ""))
    for take in takes:
        previews = ", ".join(uri for uri in (take.spritesheet_uri, take.thumbnail_uri) if uri) or "no previews"
        say(f"  {take.number}. {take.duration} s {take.resolution}  {take.video_id}  {take.made()}  ({previews})")
    if remixes_left <= 0:
        say("  (no remix round left: keep a take or reject)")


def open_previews(takes: list[Take], opened: set[str]) -> None:
    """``--open``: each take's spritesheet (its frames), else thumbnail, once."""
    from .viewer import open_video

    for take in takes:
        uri = take.spritesheet_uri or take.thumbnail_uri
        if uri and uri not in opened:
            opened.add(uri)
            shown, message = open_video(uri)
            if not shown:
                say(f"sora-video: {message}")


def read_line(deadline: float, stop: threading.Event | None = None, stream: TextIO | None = None) -> str | None:
    """A line typed before ``deadline`` (None: the deadline passed, or ``stop`` was set meanwhile).

    End of input is an interruption: nobody is left to answer, and a rerun finds the takes
    again without paying (their receipts).
    """
    stream = stream if stream is not None else sys.stdin
    sys.stderr.write(PROMPT)
    sys.stderr.flush()
    while time.time() < deadline and not (stop is not None and stop.is_set()):
        ready, _, _ = select.select([stream], [], [], min(READ_STEP, max(0.0, deadline - time.time())))
        if ready:
            line = stream.readline()
            if not line:
                raise KeyboardInterrupt
            return line
    sys.stderr.write("\n")
    return None


def terminal_ask(*, timeout: float, open_them: bool) -> Callable[[list[Take], int, int, str], Decision]:
    """The core review's ``ask``: show the takes and read the answer, asked again while unclear."""
    opened: set[str] = set()

    def ask(takes: list[Take], round_number: int, remixes_left: int, problem: str) -> Decision:
        show_takes(takes, round_number, remixes_left, problem=problem)
        if open_them:
            open_previews(takes, opened)
        line = read_line(time.time() + timeout)
        if line is None:
            say(f"no decision within {timeout:.0f} s")
            return Decision("timeout", by="timeout")
        return parse_answer(line, len(takes), remixes_left)

    return ask


@contextmanager
def answering(
    *, interactive: bool, open_them: bool, resume: Callable[[Waiting, dict[str, Any]], bool]
) -> Iterator[None]:
    """While a flow runs in this process: show each wait's takes and the run's URL, and (on a terminal)
    read the answer and ``resume(waiting, run_input)`` the paused run with it. A decision made
    in the UI meanwhile (the run publishes it) stops the prompt."""
    moments: queue.Queue[Moment | None] = queue.Queue()
    current = [threading.Event()]  # the prompt being read stops when this is set

    def arrived(moment: Moment) -> None:  # in the flow's thread: never blocks
        current[0].set()
        moments.put(moment)

    unsubscribe = subscribe(arrived)
    thread = threading.Thread(target=_answer, args=(moments, current, interactive, open_them, resume), daemon=True)
    thread.start()
    try:
        yield
    finally:
        unsubscribe()
        moments.put(None)
        thread.join(timeout=5)


def _answer(
    moments: queue.Queue[Moment | None],
    current: list[threading.Event],
    interactive: bool,
    open_them: bool,
    resume: Callable[[Waiting, dict[str, Any]], bool],
) -> None:
    opened: set[str] = set()
    while (moment := moments.get()) is not None:
        if isinstance(moment, Decided):
            say(f"decided: {moment.decision.describe()}")
            continue
        show_takes(moment.takes, moment.round, moment.remixes_left, problem=moment.problem, url=moment.url)
        if open_them:
            open_previews(moment.takes, opened)
        if not interactive:
            until = time.strftime("%H:%M", time.localtime(moment.deadline))
            say(f"waiting for a decision at {moment.url} (until {until})")
            continue
        stop = current[0] = threading.Event()
        if not moments.empty():
            continue  # the run has moved on already: that wait is over
        _answer_one(moment, stop, resume)


def _answer_one(moment: Waiting, stop: threading.Event, resume: Callable[[Waiting, dict[str, Any]], bool]) -> None:
    """Read answers for one wait until one is clear and taken, or the run moves on without it."""
    from ..core.jobs.review import answer_of

    while not stop.is_set():
        try:
            line = read_line(moment.deadline, stop)
        except KeyboardInterrupt:
            say(f"no more input here; the run still waits at {moment.url}")
            return
        if line is None:
            return  # decided elsewhere, or the deadline passed: the run says which
        decision = parse_answer(line, len(moment.takes), moment.remixes_left)
        if decision.kind == "unclear":
            say(f"that answer was unclear: {decision.problem}")
            continue
        if not resume(moment, answer_of(decision)):
            say("the run is no longer waiting (decided elsewhere)")
        return


def no_one_to_ask() -> str:
    """Why a review cannot run here, for the refusal (exit 2, nothing paid)."""
    where = "stdin is not a terminal" if not on_a_terminal() else "no terminal"
    return (
        f"nobody can pick a take: {where} and no Prefect API is configured. Run it on a terminal, "
        "or with a Prefect API (PREFECT_API_URL, `sora-video up --prefect`) to decide in the Prefect UI"
    )
