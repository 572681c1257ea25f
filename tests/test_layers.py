"""The floors: each imports only the ones below it; the emulator stands apart.

Outside the core: core -> tasks (tasks, derive_tasks, blocks, leases) -> flows -> deployments;
the adapter and the CLI sit on the core, the tasks' blocks and the flows. Inside the core:
errors and text (side by side, apart) -> ids -> summary and storage (the same) -> media ->
api -> spec -> jobs. Every import counts, lazy ones in functions and ``TYPE_CHECKING`` blocks
too: a floor that looks up only at run time still could not be understood, or installed,
without the one above.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sora_tasks"

# Each group's floor; a group imports its own modules and those of lower floors only.
CORE_FLOORS = {
    "sora_tasks.core.errors": 0,
    # Untrusted text made safe to show (cut, escaped for markdown): needed on every floor.
    "sora_tasks.core.text": 0,
    "sora_tasks.core.ids": 1,
    "sora_tasks.core.summary": 2,
    "sora_tasks.core.storage": 2,
    "sora_tasks.core.media": 3,
    "sora_tasks.core.api": 4,
    "sora_tasks.core.spec": 5,
    "sora_tasks.core.jobs": 6,
    # The package itself re-exports names lazily: nothing inside the core goes through it.
    "sora_tasks.core": 7,
}
OUTER_FLOORS = {
    "sora_tasks.core": 0,
    "sora_tasks.tasks": 1,
    "sora_tasks.derive_tasks": 1,
    "sora_tasks.review_tasks": 1,
    "sora_tasks.blocks": 1,
    "sora_tasks.leases": 1,
    "sora_tasks.flows": 2,
    "sora_tasks.deployments": 3,
    "sora_tasks.adapter": 3,
    "sora_tasks.cli": 3,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved; ``from X import y`` counts X.y when y is a module."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            submodules = {f"{origin}.{alias.name}" for alias in node.names}
            submodules = {name for name in submodules if module_path(name) is not None}
            names.update(submodules)
            if len(submodules) < len(node.names):  # it takes names from X itself, not only X's modules
                names.add(origin)
    return names


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def group_of(name: str, floors: dict[str, int]) -> str | None:
    """The longest group name that ``name`` is, or lies inside."""
    matches = [group for group in floors if name == group or name.startswith(f"{group}.")]
    return max(matches, key=len) if matches else None


def floor_offenders(under: Path, floors: dict[str, int], *, floor_shared: bool) -> list[str]:
    """Imports that reach a higher floor (or, unless ``floor_shared``, another group of the same floor)."""
    found = []
    for path in sorted(under.rglob("*.py")):
        here = group_of(module_name(path), floors)
        if here is None:
            continue
        for name in imported_modules(path):
            there = group_of(name, floors)
            if there is None or there == here:
                continue
            if floors[there] > floors[here] or (floors[there] == floors[here] and not floor_shared):
                found.append(f"{path.relative_to(ROOT)} (floor {floors[here]}) imports {name} (floor {floors[there]})")
    return found


def test_the_core_imports_no_prefect_and_nothing_above_it() -> None:
    core = PACKAGE / "core"
    outside = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in core.rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] == "prefect"
        or (name.startswith("sora_tasks.") and not name.startswith("sora_tasks.core"))
    )
    assert outside == []
    code = "import sys, sora_tasks.core, sora_tasks.adapter; print('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_inside_the_core_each_sub_system_looks_only_down() -> None:
    assert floor_offenders(PACKAGE / "core", CORE_FLOORS, floor_shared=False) == []
    # Every module of the core belongs to a floor: a new one is placed on purpose.
    unplaced = [
        str(path.relative_to(ROOT))
        for path in (PACKAGE / "core").rglob("*.py")
        if group_of(module_name(path), {k: v for k, v in CORE_FLOORS.items() if k != "sora_tasks.core"}) is None
        and path != PACKAGE / "core/__init__.py"
    ]
    assert unplaced == []


def test_tasks_flows_deployments_adapter_and_cli_only_look_down() -> None:
    assert floor_offenders(PACKAGE, OUTER_FLOORS, floor_shared=True) == []


def test_no_folder_holds_more_than_a_dozen_modules() -> None:
    crowded = {
        str(folder.relative_to(ROOT)): count
        for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")]
        if (count := len([p for p in folder.glob("*.py") if p.name != "__init__.py"])) > 12
    }
    assert crowded == {}


def test_only_the_cli_reaches_the_emulator() -> None:
    users = sorted(
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if "emulator" not in path.parts
        and any(
            name == "sora_tasks.emulator" or name.startswith("sora_tasks.emulator.") for name in imported_modules(path)
        )
    )
    # The CLI starts it as its own process (`python -m sora_tasks.emulator`), never imports it.
    assert users == []
    assert '"sora_tasks.emulator"' in (PACKAGE / "cli/services.py").read_text()


def test_the_emulator_stands_apart() -> None:
    reaches = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (PACKAGE / "emulator").rglob("*.py")
        for name in imported_modules(path)
        if name.startswith("sora_tasks.") and not name.startswith("sora_tasks.emulator")
    )
    assert reaches == []


def test_no_import_circles() -> None:
    """No module reaches itself through its imports, lazy ones included (a circle is one sub-system in two files)."""
    graph = {
        module_name(path): {name for name in imported_modules(path) if module_path(name) is not None}
        for path in PACKAGE.rglob("*.py")
    }
    circles = set()
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            here, trail = stack.pop()
            for there in graph.get(here, ()):
                # A package's __init__ re-exporting its own modules is not a circle of theirs.
                if there == start and not start.startswith(f"{here}."):
                    circles.add(" -> ".join((*trail, there)))
                elif there not in seen and not start.startswith(f"{there}."):
                    seen.add(there)
                    stack.append((there, (*trail, there)))
    assert sorted(circles) == []
