"""What the server's error answers mean for us: retryable, refused, or "this API is gone"."""

from __future__ import annotations

import openai

from ..errors import ConfigurationError, ServerRejectedError, TransientError
from ..text import shorten

HOSTED_SHUTDOWN_DATE = "2026-09-24"
# Where the videos endpoints live once OpenAI's hosted Sora API is gone.
ALTERNATIVES = "a LiteLLM proxy, vLLM-Omni, SGLang, or `sora-emulator` for local runs"


def status_error(error: openai.APIStatusError, video_id: str | None = None) -> Exception:
    """Map an SDK status error to ours: transient ones are retryable, the rest are not."""
    status = error.status_code
    if status == 429 or status >= 500:
        retry_after = error.response.headers.get("retry-after")
        return TransientError(
            f"HTTP {status} from the Videos API: {shorten(error.message, MESSAGE_CHARS)}",
            video_id=video_id,
            status_code=status,
            retry_after=float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None,
        )
    param = getattr(error, "param", None)
    hint = " (the API key was refused: check OPENAI_API_KEY or the VideosApi block's key)" if status == 401 else ""
    return ServerRejectedError(
        f"HTTP {status} from the Videos API: {shorten(error.message, MESSAGE_CHARS)}{hint}",
        status_code=status,
        param=param,
    )


# A server's error text is echoed in messages and logs: a hostile or broken one may send megabytes.
MESSAGE_CHARS = 500


def server_message(error: openai.APIStatusError) -> str:
    """The server's own error message (the SDK's ``message`` prefixes "Error code: N - ")."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return str(error.message)


def hosted_shutdown_error(
    error: openai.APIStatusError, *, operation: str, base_url: str, source_id: str | None = None
) -> ConfigurationError | None:
    """The configuration error for an answer saying the hosted videos endpoints are gone, else None.

    Asked only of OpenAI's hosted API (see ``ProviderProfile.hosted_by_openai``): a
    404 or 410, or a "not found" / "Invalid URL" error, to a job-making request. A 404
    that names the source video of a remix, edit or extension means that video is
    missing, not the API, and is left to the caller.
    """
    message = server_message(error)
    lowered = message.lower()
    if error.status_code not in (404, 410) and "not found" not in lowered and "invalid url" not in lowered:
        return None
    if source_id is not None and "invalid url" not in lowered:
        param = getattr(error, "param", None)
        if param in ("video", "video_id", "id") or source_id in message:
            return None
    return ConfigurationError(
        f"the Videos API at {base_url} answered {operation} with HTTP {error.status_code} ({message}): "
        f"OpenAI scheduled the hosted Sora API to shut down on {HOSTED_SHUTDOWN_DATE}, and its videos "
        f"endpoints look gone. Point base_url (OPENAI_BASE_URL, --base-url or a VideosApi block's base_url) "
        f"at another server that speaks the Videos API: {ALTERNATIVES}; and set provider to match it "
        "(e.g. provider='litellm', or 'auto' to detect it)"
    )
