"""Fault injection for the emulator: what a flaky, busy or strict Videos API does.

Two ways to ask for a fault, usable together:
- fractions (``rate_limit=0.1``): each request is faulted with that probability,
  drawn from a seeded generator so runs are repeatable;
- one-shot injections (``inject("429", endpoint="create")``): the next matching
  request gets exactly that fault, for tests that need certainty.

Besides faults of the answers, *defects* of the videos themselves: a job can be rendered
all black, as one still frame (``frozen``), half as long as asked (``short``), at half
the size asked (``size``) or with a silent audio track (``silent``), and still be
reported ``completed``, as a provider's broken render would. Ask for one with a marker in
the prompt (``[fault:black]``), for every job (``FaultPlan(defects=("black",))``,
``sora-emulator --defect black``) or for the next job only (``inject("black")``, or
``inject("black", endpoint="create")`` for the next create).
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, field

DEFECT_KINDS = ("black", "frozen", "short", "size", "silent")
FAULT_KINDS = ("429", "500", "503", "reset", "cut", "create_then_500", "slow", *DEFECT_KINDS)
_DEFECT_MARKER = re.compile(r"\[fault:([a-z_]+)\]")


@dataclass
class Injection:
    kind: str
    endpoint: str | None
    remaining: int


@dataclass
class FaultPlan:
    rate_limit: float = 0.0
    retry_after_seconds: float = 1.0
    server_error: float = 0.0
    reset: float = 0.0
    cut_download: float = 0.0
    create_then_500: float = 0.0
    moderation_words: tuple[str, ...] = ()
    slow: float = 0.0  # fraction of answers delayed by slow_seconds
    slow_seconds: float = 1.0
    seed: int = 0
    defects: tuple[str, ...] = ()  # every job is rendered with these (see DEFECT_KINDS)
    _injections: list[Injection] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def inject(self, kind: str, *, endpoint: str | None = None, count: int = 1) -> None:
        """Fault the next ``count`` requests to ``endpoint`` (any endpoint when None).

        A defect (``black``, ``frozen``, ``short``, ``size``, ``silent``) spoils the render of
        the next ``count`` jobs made by ``endpoint`` (create, remix, edit, extend; None: any).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {kind!r}")
        with self._lock:
            self._injections.append(Injection(kind, endpoint, count))

    def clear(self) -> None:
        with self._lock:
            self._injections.clear()
            self.rate_limit = self.server_error = self.reset = self.cut_download = self.create_then_500 = 0.0
            self.slow, self.slow_seconds = 0.0, 1.0
            self.moderation_words = ()
            self.defects = ()

    def _take_injection(self, endpoint: str, kinds: tuple[str, ...]) -> str | None:
        for injection in self._injections:
            if injection.kind in kinds and injection.endpoint in (None, endpoint):
                injection.remaining -= 1
                if injection.remaining <= 0:
                    self._injections.remove(injection)
                return injection.kind
        return None

    def _roll(self, probability: float) -> bool:
        return probability > 0 and self._random.random() < probability

    def request_fault(self, endpoint: str) -> str | None:
        """A fault instead of handling the request: '429', '500', '503' or 'reset' (no answer)."""
        with self._lock:
            injected = self._take_injection(endpoint, ("429", "500", "503", "reset"))
            if injected:
                return injected
            if self._roll(self.rate_limit):
                return "429"
            if self._roll(self.server_error):
                return self._random.choice(("500", "503"))
            if self._roll(self.reset):
                return "reset"
            return None

    def wants(self, kind: str, endpoint: str) -> bool:
        """Whether this request should get a handler-level fault (cut, create_then_500, slow).

        ``create_then_500`` is asked for by every request that makes a job, under its own
        endpoint name: "create", "remix", "edit" or "extend".
        """
        probability = {
            "cut": self.cut_download,
            "create_then_500": self.create_then_500,
            "slow": self.slow,
        }[kind]
        with self._lock:
            return self._take_injection(endpoint, (kind,)) is not None or self._roll(probability)

    def render_defects(self, prompt: str, endpoint: str) -> frozenset[str]:
        """The defects a new job made by ``endpoint`` is rendered with: its prompt's markers, the
        plan's ``defects`` and any one-shot injection for it. An unknown marker is ignored, as
        a provider ignores odd words in a prompt."""
        found = {kind for kind in _DEFECT_MARKER.findall(prompt) if kind in DEFECT_KINDS}
        with self._lock:
            found.update(self.defects)
            for kind in DEFECT_KINDS:  # one of each per job: ``count=2`` spoils the next two jobs
                if self._take_injection(endpoint, (kind,)) is not None:
                    found.add(kind)
        return frozenset(found)

    def is_moderated(self, prompt: str) -> bool:
        lowered = prompt.lower()
        return any(word.lower() in lowered for word in self.moderation_words)
