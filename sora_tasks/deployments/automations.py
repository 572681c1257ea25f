"""Apply the automations shipped in ``sora_tasks/automations/`` to the Prefect server, for your notification block.

    python -m sora_tasks.deployments.automations --notify slack-webhook/ops     # every shipped file
    python -m sora_tasks.deployments.automations --notify custom-webhook/hook sora_tasks/automations/video-failed.yaml

``--notify`` names a saved notification block (``TYPE-SLUG/NAME``, as ``prefect block ls``
shows): its id replaces the files' placeholder, and the automation is enabled. An
automation of the same name is replaced, so applying twice leaves one. Without
``--notify`` the files are applied as they are (disabled, until a block is chosen in the
UI), as ``prefect automation create --from-file`` would.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore

FOLDER = Path(__file__).resolve().parent.parent / "automations"
PLACEHOLDER = UUID(int=0)
ZOMBIE_DETECTION = FOLDER / "crash-zombie-flow-runs.yaml"


def load(path: Path) -> list[dict[str, Any]]:
    """The automations a file holds (one, a list, or ``automations:``), as Prefect's CLI reads them."""
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict) and "automations" in data:
        return list(data["automations"])
    return list(data) if isinstance(data, list) else [data]


def point_at(automation: dict[str, Any], block_id: UUID) -> dict[str, Any]:
    """The automation with its placeholder notification block replaced, and enabled."""
    actions = [
        {**action, "block_document_id": str(block_id)}
        if action.get("type") == "send-notification" and UUID(str(action.get("block_document_id"))) == PLACEHOLDER
        else action
        for action in automation.get("actions", [])
    ]
    return {**automation, "actions": actions, "enabled": True}


def apply(paths: list[Path], notify: str | None = None) -> list[tuple[str, UUID]]:
    """Create every automation in ``paths`` (replacing those of the same name); (name, id) of each."""
    created: list[tuple[str, UUID]] = []
    with get_client(sync_client=True) as client:
        block_id = None
        if notify is not None:
            slug, _, name = notify.partition("/")
            if not name:
                raise SystemExit(f"--notify takes TYPE-SLUG/NAME (as `prefect block ls` shows), got {notify!r}")
            block_id = client.read_block_document_by_name(name=name, block_type_slug=slug).id
        for path in paths:
            for data in load(path):
                if block_id is not None:
                    data = point_at(data, block_id)
                automation = AutomationCore.model_validate(data)
                for old in client.read_automations_by_name(automation.name):
                    client.delete_automation(old.id)
                created.append((automation.name, client.create_automation(automation)))
    return created


def ensure_zombie_detection() -> dict[str, str]:
    """A ``prefect deploy`` build step (prefect.yaml's ``build:``): zombie detection, created if missing.

    An automation of its name already there is kept as it is, with any change made to it in
    the UI: ``prefect deploy --all`` runs the step once per deployment, and a later deploy
    must not undo a tuned ``within``. Returns the automation's id as the step's output.
    """
    [data] = load(ZOMBIE_DETECTION)
    automation = AutomationCore.model_validate(data)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        automation_id = existing[0].id if existing else client.create_automation(automation)
    return {"zombie_automation_id": str(automation_id)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sora_tasks.deployments.automations", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "files", nargs="*", type=Path, help="automation files (default: every one in sora_tasks/automations/)"
    )
    parser.add_argument(
        "--notify", metavar="TYPE-SLUG/NAME", help="the notification block to send to, e.g. slack-webhook/ops"
    )
    args = parser.parse_args(argv)
    paths = args.files or sorted(FOLDER.glob("*.yaml"))
    if not paths:
        parser.error(
            f"no automation files in {FOLDER}: name one (sora_tasks/automations/video-failed.yaml in the project)"
        )
    for name, automation_id in apply(paths, args.notify):
        print(f"{name}: {automation_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
