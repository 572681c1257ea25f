"""The seed document's Python examples, run unchanged against the emulator.

Each ```python block of ../shared/spec/sora-video-adapter.md is executed as written
(its import path `tryon.api.openAI` is aliased to `sora_tasks`). Where an example
asks for 1920x1080 or 1080x1920, the Videos API contract wins: the example must
raise a ValueError that names the allowed sizes, before any request is sent.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import sora_tasks

SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "sora-video-adapter.md"


def python_blocks() -> list[tuple[int, str]]:
    if not SPEC.exists():
        return []
    text = SPEC.read_text()
    blocks = []
    for match in re.finditer(r"^( *)```python\n(.*?)^\1```", text, flags=re.S | re.M):
        code = textwrap.dedent(match.group(2))
        line = text[: match.start()].count("\n") + 1
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue  # signature listings in the API reference, not runnable examples
        if any(isinstance(node, ast.Call) for node in ast.walk(tree)):  # not a bare "returns" shape
            blocks.append((line, code))
    return blocks


BLOCKS = python_blocks()


@pytest.fixture(scope="module")
def seed_namespace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    package = types.ModuleType("tryon")
    api = types.ModuleType("tryon.api")
    sys.modules.update({"tryon": package, "tryon.api": api, "tryon.api.openAI": sora_tasks})
    folder = tmp_path_factory.mktemp("seed")
    for name, size in (
        ("model_photo.jpg", (1200, 1600)),
        ("product_photo.jpg", (1000, 1000)),
        ("model_portrait.jpg", (1080, 1920)),
    ):
        Image.new("RGB", size, (180, 120, 90)).save(folder / name)
    saved: list[bytes] = []
    # Names the document's snippets assume are defined elsewhere in the reader's script.
    return {"__folder__": folder, "save_video": saved.append, "prompts": ["one", "two"], "__saved__": saved}


@pytest.mark.skipif(not BLOCKS, reason=f"the seed document is not at {SPEC}")
@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_seed_example_runs_unchanged(
    line: int,
    code: str,
    seed_namespace: dict[str, Any],
    emulator,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.chdir(seed_namespace["__folder__"])
    asks_for_1080p = "1920x1080" in code or "1080x1920" in code
    try:
        exec(compile(code, f"spec:{line}", "exec"), seed_namespace)
    except ValueError as error:
        assert asks_for_1080p, f"unexpected ValueError in the example at line {line}: {error}"
        assert "no 1080p size" in str(error) and "720x1280, 1280x720" in str(error)
        assert emulator.state.jobs_created == 0  # refused before anything was paid for
        return
    adapter = seed_namespace.get("adapter")
    if adapter is not None:
        adapter.wait_all(timeout=120)  # let async callbacks finish before judging
    printed_invalid = "Invalid parameters" in code and asks_for_1080p  # the error-handling example catches it
    assert not asks_for_1080p or printed_invalid, f"the example at line {line} should have been refused"
    if not asks_for_1080p:
        assert emulator.state.jobs_created >= 1
        for written in Path(seed_namespace["__folder__"]).glob("*.mp4"):
            assert written.stat().st_size > 1000
