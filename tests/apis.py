"""Pointing the flows at a test server: an unsaved ``VideosApi`` block, as a caller would pass one."""

from __future__ import annotations

from typing import Any

from sora_tasks.blocks import VideosApi


def api_for(server: Any, **overrides: Any) -> VideosApi:
    """A ``VideosApi`` block for ``server`` (the emulator, or a base URL such as the LiteLLM proxy's).

    ``overrides`` are the block's other fields (``poll_interval``, ``max_wait``, ``provider``...);
    the key is left to ``OPENAI_API_KEY``, as the tests' environment sets it.
    """
    base_url = server if isinstance(server, str) else server.base_url
    return VideosApi(base_url=base_url, **overrides)
