"""Where the Videos API is and how long to wait for it: the defaults, with no SDK import.

Kept apart from the client so that checking input (the CLI's first step) does not pay
for importing the OpenAI SDK.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from ..errors import ConfigurationError

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_WAIT = 20 * 60.0  # sora-2-pro at 12 s can take well over ten minutes
DEFAULT_POLL_INTERVAL = 5.0


def resolve_base_url(base_url: str | None) -> str:
    """``base_url``, else ``$OPENAI_BASE_URL``, else OpenAI's; an http(s) URL without a trailing slash."""
    url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).strip().rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL such as https://host/v1, got {url!r}")
    return url
