"""The floors: each imports only the ones below it; the emulator stands apart."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def modules_under(folder: str) -> dict[Path, set[str]]:
    return {path: imported_modules(path) for path in (ROOT / folder).rglob("*.py")}


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path, names in modules_under(folder).items()
        for name in names
        if name.split(".")[0] in forbidden or any(name.startswith(f) for f in forbidden if "." in f)
    )


def test_core_imports_no_prefect_and_nothing_above_it() -> None:
    assert offenders("sora_tasks/core", ("prefect", "flows", "deployments", "sora_tasks.emulator")) == []
    code = "import sys, sora_tasks.core, sora_tasks.adapter; print('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_tasks_flows_deployments_only_look_down() -> None:
    tasks = {
        path: imported_modules(path) for path in (ROOT / "sora_tasks/tasks.py", ROOT / "sora_tasks/derive_tasks.py")
    }
    assert not any(n.startswith(("flows", "deployments")) for names in tasks.values() for n in names)
    assert offenders("flows", ("deployments", "sora_tasks.emulator", "sora_tasks.cli", "sora_tasks.adapter")) == []


def test_only_the_cli_reaches_the_emulator() -> None:
    users = sorted(
        str(path.relative_to(ROOT))
        for folder in ("sora_tasks", "flows", "deployments")
        for path, names in modules_under(folder).items()
        if "emulator" not in path.parts
        and any(n.startswith("sora_tasks.emulator") or n == "sora_tasks.emulator" for n in names)
    )
    # The CLI starts it as its own process (`python -m sora_tasks.emulator`), never imports it.
    assert users == []
    assert '"sora_tasks.emulator"' in (ROOT / "sora_tasks/cli/services.py").read_text()
