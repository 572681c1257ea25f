"""How to reach a Videos API server: one settings object for the flows, the CLI and the adapter.

The Prefect ``VideosApi`` block, the CLI's flags and the seed's ``SoraVideoAdapter``
arguments all become this. The key is a ``SecretStr``: its repr, ``str`` and JSON form are
``**********``, so logging or serialising the settings never shows it.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..media.quality import QualityPolicy, QualityThresholds, normalize_quality
from .endpoints import DEFAULT_MAX_WAIT, DEFAULT_POLL_INTERVAL, resolve_base_url
from .providers import ProviderProfile, resolve_profile

if TYPE_CHECKING:
    from .client import VideosClient
    from .watcher import JobWatcher


class ApiSettings(BaseModel):
    """Where and how to call the Videos API. ``None`` values fall back to the environment."""

    model_config = ConfigDict(frozen=True)

    base_url: str | None = None  # None: $OPENAI_BASE_URL, else OpenAI's host
    api_key: SecretStr | None = None  # None: $OPENAI_API_KEY where the client is built
    # A profile name from sora_tasks.core.api.providers, "auto" to ask the server, or
    # None: "openai" for OpenAI's host, "generic" for any other /v1/videos server.
    provider: str | None = None
    model: str = "sora-2"  # used when a request names no model
    request_timeout: float = 60.0
    max_retries: int = 3  # the SDK's, for reads only: a create is never re-sent
    poll_interval: float = DEFAULT_POLL_INTERVAL
    max_wait: float = DEFAULT_MAX_WAIT
    # A Prefect global concurrency limit with slot decay shared by every worker calling
    # the same account (e.g. "sora-api"); None: creates are not rate-limited.
    rate_limit_name: str | None = None
    # A Prefect global concurrency limit bounding jobs rendering at once for the account:
    # a slot is held from right before the create until the job stops rendering, and
    # released by its lease if the holder dies. None: only the batch's max_in_flight.
    render_limit_name: str | None = None
    # The largest download taken, in MB (see client.DEFAULT_MAX_DOWNLOAD_MB).
    max_download_mb: float = 4096.0
    # What happens to a finished video that fails the quality check (core.media.quality):
    # fail, warn, off or retry=N; and the limits it is checked against.
    quality: str = "fail"
    quality_thresholds: QualityThresholds = Field(default_factory=QualityThresholds)

    @field_validator("quality", mode="before")
    @classmethod
    def _one_spelling(cls, value: object) -> str:
        return normalize_quality(value)

    @property
    def quality_policy(self) -> QualityPolicy:
        return QualityPolicy.of(self.quality, self.quality_thresholds)

    def with_quality(self, quality: str | None) -> ApiSettings:
        """These settings with ``quality`` (a flow's or the CLI's) instead of their own; None keeps theirs."""
        return self if quality is None else self.model_copy(update={"quality": normalize_quality(quality)})

    @property
    def resolved_base_url(self) -> str:
        return resolve_base_url(self.base_url)

    @property
    def profile(self) -> ProviderProfile:
        return resolve_profile(self.provider, self.resolved_base_url)

    def new_client(self) -> VideosClient:
        """A client of its own, for a caller that closes it."""
        from .client import VideosClient

        key = self.api_key.get_secret_value() if self.api_key else None
        return VideosClient(
            api_key=key,
            base_url=self.resolved_base_url,
            max_retries=self.max_retries,
            timeout=self.request_timeout,
            provider=self.profile,
            max_download_mb=self.max_download_mb,
        )

    def watcher(self) -> JobWatcher:
        """This process's shared status reads for these settings' server (see :mod:`.watcher`)."""
        from .watcher import shared_watcher

        key = (*self._client_key(), self.poll_interval)
        return shared_watcher(key, self.new_client, poll_interval=self.poll_interval)

    def client(self) -> VideosClient:
        """This thread's client for these settings, kept for every later call.

        Keeping it keeps HTTP connections alive across tasks. One per thread, not one
        per process: the SDK's connection pool takes a lock for every request and
        checks every pooled socket under it, and twenty batch threads sharing one
        pool spent more time queueing for that lock than talking to the server.
        """
        key = self._client_key()
        clients: dict[tuple[Any, ...], VideosClient] = _per_thread.__dict__.setdefault("clients", {})
        if key not in clients:
            clients[key] = self.new_client()
        return clients[key]

    def _client_key(self) -> tuple[Any, ...]:
        # The key actually used, env included: a rotated or removed OPENAI_API_KEY is noticed.
        return (
            self.api_key.get_secret_value() if self.api_key else os.environ.get("OPENAI_API_KEY"),
            self.resolved_base_url,
            self.max_retries,
            self.request_timeout,
            self.provider,
            self.max_download_mb,
        )


_per_thread = threading.local()


def close_thread_clients() -> None:
    """Close and forget the clients :meth:`ApiSettings.client` kept for this thread.

    For a worker thread about to end (a sweep's): its connections are closed now
    rather than whenever the garbage collector finds them.
    """
    clients: dict[tuple[Any, ...], VideosClient] = _per_thread.__dict__.pop("clients", {})
    for client in clients.values():
        client.close()
