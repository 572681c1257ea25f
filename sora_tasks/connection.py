"""How the Prefect layer reaches the Videos API, without putting a key in a parameter.

Flow and task parameters are stored by Prefect and shown in its UI, so they carry
only the *name* of a Prefect ``Secret`` block; the key itself is read inside the
task, from that block or from ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import os
import threading
from typing import Any, cast

from pydantic import BaseModel, ConfigDict

from .core.client import DEFAULT_MAX_WAIT, VideosClient, resolve_base_url
from .core.providers import ProviderProfile, resolve_profile


class ApiSettings(BaseModel):
    """Where and how to call the Videos API. Safe to log: it holds no secret."""

    model_config = ConfigDict(frozen=True)

    base_url: str | None = None
    api_key_secret: str | None = None
    max_wait: float = DEFAULT_MAX_WAIT
    poll_interval: float = 5.0
    max_retries: int = 3
    request_timeout: float = 60.0
    # A Prefect global concurrency limit with slot decay, shared by every worker
    # that calls the same API account (e.g. "sora-api"); absent limits are skipped.
    rate_limit_name: str | None = None
    # A profile name from sora_tasks.core.providers, "auto" to ask the server, or
    # None: "openai" for OpenAI's host, "generic" for any other /v1/videos server.
    provider: str | None = None

    @property
    def resolved_base_url(self) -> str:
        return resolve_base_url(self.base_url)

    @property
    def profile(self) -> ProviderProfile:
        return resolve_profile(self.provider, self.resolved_base_url)

    def api_key(self) -> str | None:
        if self.api_key_secret:
            from prefect.blocks.system import Secret

            # Called from sync tasks, where Prefect's load() returns the block itself.
            secret = cast("Secret[str]", Secret.load(self.api_key_secret))
            return str(secret.get())
        return os.environ.get("OPENAI_API_KEY")

    def client(self) -> VideosClient:
        """This thread's client for these settings and key, kept for every later task.

        Keeping it keeps HTTP connections alive across tasks. One per thread, not one
        per process: the SDK's connection pool takes a lock for every request and
        checks every pooled socket under it, and twenty batch threads sharing one
        pool spent more time queueing for that lock than talking to the server.
        """
        key = (self.api_key(), self.resolved_base_url, self.max_retries, self.request_timeout, self.provider)
        clients: dict[tuple[Any, ...], VideosClient] = _per_thread.__dict__.setdefault("clients", {})
        if key not in clients:
            clients[key] = VideosClient(
                api_key=key[0], base_url=key[1], max_retries=key[2], timeout=key[3], provider=self.profile
            )
        return clients[key]


_per_thread = threading.local()
