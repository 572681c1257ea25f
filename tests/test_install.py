"""Installing into a Prefect environment that already exists: nothing there changes, nothing collides.

A fresh venv gets the Prefect this suite runs on (``pip install prefect==X``), then the wheel
``python -m build`` makes of this checkout. Prefect, FastAPI, pydantic and httpx keep their
versions; a user's project with its own ``flows`` and ``deployments`` packages imports them
and prefect-sora's flows side by side; ``generate_video`` runs there as a flow run and
``sora-video --prefect`` works there, both against a real ``prefect server start``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prefect import __version__ as PREFECT_VERSION

from .media import probe_mp4
from .prefect_api import prefect_api

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
KEPT = ("prefect", "fastapi", "pydantic", "httpx", "starlette")


def run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


def versions(python: Path) -> dict[str, str]:
    listed = json.loads(run([str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"]))
    return {entry["name"].lower(): entry["version"] for entry in listed}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # From a copy of the tracked files: the build must not depend on (or write into) this work tree.
    source = tmp_path_factory.mktemp("source")
    files = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)])
    [built] = out.glob("prefect_sora-*.whl")
    return built


@pytest.fixture(scope="module")
def prefect_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the Prefect this suite runs on (and what it pulls in)."""
    venv = tmp_path_factory.mktemp("users-prefect") / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"prefect=={PREFECT_VERSION}"])
    return python


def test_the_wheel_installs_into_an_existing_prefect_and_changes_none_of_it(
    wheel: Path, prefect_venv: Path, tmp_path: Path
) -> None:
    before = versions(prefect_venv)
    assert before["prefect"] == PREFECT_VERSION
    # What `pip install .` would do there, as pip's resolver reports it: install, never replace.
    report_path = tmp_path / "report.json"
    run(
        [str(prefect_venv), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--dry-run", "--report",
         str(report_path), str(ROOT)]
    )  # fmt: skip
    planned = {item["metadata"]["name"].lower() for item in json.loads(report_path.read_text())["install"]}
    print(f"pip install . would add: {sorted(planned)}")
    assert "prefect-sora" in planned
    assert planned.isdisjoint(KEPT), f"pip install . would replace {sorted(planned & set(KEPT))}"

    run([str(prefect_venv), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)])
    after = versions(prefect_venv)
    print("kept: " + ", ".join(f"{name} {after[name]}" for name in KEPT))
    assert {name: after[name] for name in KEPT} == {name: before[name] for name in KEPT}
    assert after["prefect-sora"]
    # One top-level import name: nothing else of the distribution's lands in site-packages.
    record = next((prefect_venv.parent.parent / "lib").glob("python3.*/site-packages/prefect_sora-*.dist-info/RECORD"))
    tops = {line.split("/")[0] for line in record.read_text().splitlines() if line and not line.startswith("../")}
    assert {top for top in tops if not top.endswith(".dist-info") and top != "__pycache__"} == {"sora_tasks"}


def test_a_users_own_flows_and_deployments_import_beside_the_installed_ones(
    wheel: Path, prefect_venv: Path, tmp_path: Path
) -> None:
    run([str(prefect_venv), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)])
    project = tmp_path / "their-project"
    for package in ("flows", "deployments"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f'OWNER = "the user\'s {package}"\n')
    (project / "flows" / "etl.py").write_text(
        "from prefect import flow\n\n@flow\ndef nightly() -> str:\n    return 'etl'\n"
    )
    script = textwrap.dedent(
        """
        import json
        import deployments, flows, flows.etl
        import sora_tasks.deployments.serve
        from sora_tasks.flows.batch import generate_videos
        from sora_tasks.flows.generate import generate_video
        print(json.dumps({
            "flows": flows.OWNER, "deployments": deployments.OWNER, "etl": flows.etl.nightly.name,
            "generate": generate_video.name, "batch": generate_videos.name,
            "sora_tasks": sora_tasks.deployments.serve.__file__,
        }))
        """
    )
    seen = json.loads(run([str(prefect_venv), "-c", script], cwd=project).strip().splitlines()[-1])
    assert seen["flows"] == "the user's flows" and seen["deployments"] == "the user's deployments"
    assert seen["etl"] == "nightly"
    assert (seen["generate"], seen["batch"]) == ("generate-video", "generate-videos")
    assert "site-packages" in seen["sora_tasks"]


def test_generate_video_and_the_cli_run_as_flow_runs_there(  # type: ignore[no-untyped-def]
    wheel: Path, prefect_venv: Path, tmp_path: Path, emulator, prefect_server_env: dict[str, str], unique_prompt: str
) -> None:
    run([str(prefect_venv), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SORA_"))},
        **prefect_server_env,
        "SORA_HOME": str(tmp_path / "sora-home"),
        "OPENAI_API_KEY": "sk-emulator",
        "OPENAI_BASE_URL": emulator.base_url,
    }
    script = textwrap.dedent(
        f"""
        from sora_tasks.core.spec import VideoSpec
        from sora_tasks.flows.generate import generate_video

        state = generate_video(
            VideoSpec(prompt={unique_prompt + " (python)"!r}, duration=4, resolution="1280x720"),
            output={str(tmp_path / "python.mp4")!r},
            return_state=True,
        )
        print(state.type.value, state.state_details.flow_run_id, state.result().uri)
        """
    )
    kind, flow_run_id, uri = run([str(prefect_venv), "-c", script], cwd=tmp_path, env=env).split()[-3:]
    assert kind == "COMPLETED" and uri == str(tmp_path / "python.mp4")
    assert probe_mp4(tmp_path / "python.mp4").codec == "h264"
    flow_run = prefect_api("GET", f"/flow_runs/{flow_run_id}", api_url=env["PREFECT_API_URL"])
    assert flow_run["state_type"] == "COMPLETED"

    sora_video = prefect_venv.parent / "sora-video"
    command = [str(sora_video), "--prefect", "--quiet", "--prompt", f"{unique_prompt} (cli)", "--output", "cli.mp4"]
    printed = run(command, cwd=tmp_path, env=env).strip()
    assert printed == str(tmp_path / "cli.mp4")
    assert probe_mp4(tmp_path / "cli.mp4").codec == "h264"
    runs: list[dict[str, Any]] = prefect_api(
        "POST",
        "/flow_runs/filter",
        json={"flows": {"name": {"any_": ["generate-video"]}}, "limit": 10},
        api_url=env["PREFECT_API_URL"],
    )
    assert sorted(run["state_type"] for run in runs) == ["COMPLETED", "COMPLETED"]
    print(f"in a venv with prefect {PREFECT_VERSION}: 2 generate-video flow runs completed, {uri}, {printed}")
