"""Where a call goes (which server, which key) and how it runs (plain core, or a Prefect flow run).

Decided once per call from flags and environment, before anything starts, so the
checks and the run see the same server kind.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import SecretStr

from ..core.api.settings import ApiSettings
from . import services


@dataclass(frozen=True)
class Target:
    """The Videos API a call talks to: a saved ``VideosApi`` block, the emulator, or flags and env."""

    settings: ApiSettings
    api_block: str | None = None
    emulator: bool = False
    overridden: bool = False  # settings differ from the saved block's (e.g. --max-wait)

    def with_max_wait(self, max_wait: float | None) -> Target:
        if max_wait is None:
            return self
        return replace(self, settings=self.settings.model_copy(update={"max_wait": max_wait}), overridden=True)


def choose_target(args: argparse.Namespace) -> Target:
    """A block when named; the emulator when asked or when nothing points at a real server."""
    block = getattr(args, "api_block", None) or os.environ.get("SORA_API_BLOCK")
    if block and not args.emulator:
        from ..blocks import load_api

        return Target(load_api(block), api_block=block)
    explicit = args.base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY")
    if args.emulator or not explicit:
        # The emulator plays OpenAI's hosted API, so OpenAI's models and sizes apply to it.
        settings = ApiSettings(provider=args.provider or "openai", api_key=SecretStr(services.EMULATOR_KEY))
        return Target(settings, emulator=True)
    return Target(ApiSettings(base_url=args.base_url, provider=args.provider))


def start(target: Target, *, quiet: bool) -> Target:
    """The target with a live URL: the background emulator is started here if it is needed."""
    if not target.emulator:
        return target
    fresh = services.running("emulator") is None
    emulator = services.ensure_emulator()
    if fresh and not quiet:
        print(
            f"using the local Sora emulator at {emulator.url} (free, synthetic video; "
            "it keeps running for later calls, `sora-video down` stops it)",
            file=sys.stderr,
        )
    return replace(target, settings=target.settings.model_copy(update={"base_url": emulator.url}))


def configured_prefect_api() -> str | None:
    """A Prefect API this machine is set up to use: env, `sora-video up --prefect`, or the active profile."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    server = services.running("prefect") if (services.services_dir() / "prefect.json").exists() else None
    if server is not None:
        return server.url
    return _profile_api_url()


def _profile_api_url() -> str | None:
    try:
        import tomllib
    except ImportError:  # Python 3.10: no TOML reader in the standard library
        return None
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    url = data.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def use_prefect(args: argparse.Namespace) -> bool:
    """Flow runs when asked, when a block must be read, or when a Prefect API is configured."""
    if getattr(args, "local", False):
        return False
    blocks = (
        getattr(args, "api_block", None) or os.environ.get("SORA_API_BLOCK"),
        getattr(args, "destination_block", None),
    )
    if getattr(args, "prefect", False) or any(blocks):
        return True
    url = configured_prefect_api()
    if url:
        os.environ["PREFECT_API_URL"] = url
        return True
    return False


def prepare_prefect(verbose: bool) -> None:
    """Settings Prefect reads once, at import: set before it is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A temporary server builds its database on first use; 20 s (Prefect's default) is
    # not enough on a busy two-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        # The run's logs still reach the Prefect API (and UI); the terminal shows ours.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
