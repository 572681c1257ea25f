"""Servers that speak the Videos API, and what each kind supports.

Profiles are data, in this one place: which models, sizes and durations a server
kind takes, whether it wants ``seconds`` as a string or a number, whether it honours
``variant``, whether list and delete exist, which extra create fields it understands
(sent through the SDK's ``extra_body``) and its price per second for estimates.
Users add or replace profiles with :func:`register`.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

from .errors import InvalidRequestError
from .pricing import DEFAULT_PRICES
from .request import MODEL_SIZES, SECONDS, VideoRequest


@dataclass(frozen=True)
class ProviderProfile:
    name: str
    description: str
    example_base_url: str
    example_model: str = "sora-2"
    # None: any model and any WIDTHxHEIGHT are passed through to the server.
    models: dict[str, tuple[str, ...]] | None = None
    # None: any positive whole number of seconds.
    seconds: tuple[str, ...] | None = None
    seconds_type: Literal["str", "int"] = "str"
    supports_variants: bool = True
    supports_list: bool = True
    supports_delete: bool = True
    extra_fields: tuple[str, ...] = ()
    price_per_second: dict[str, float] = field(default_factory=dict)
    notes: str = ""

    def build_request(
        self,
        prompt: str,
        *,
        model: str = "sora-2",
        duration: int | str = 4,
        resolution: str = "1280x720",
        extra: Mapping[str, Any] | None = None,
    ) -> VideoRequest:
        """A request this server accepts, or :class:`InvalidRequestError` naming the field."""
        model = str(model).strip()
        if self.models is not None and model not in self.models:
            raise InvalidRequestError(
                f"model must be one of {', '.join(self.models)} for provider {self.name}, got {model!r}"
            )
        if self.seconds is not None and str(duration).strip() not in self.seconds:
            raise InvalidRequestError(
                f"duration must be one of {', '.join(self.seconds)} seconds for provider {self.name}, got {duration!r}"
            )
        request = VideoRequest.build(
            prompt,
            model=model,
            duration=duration,
            resolution=resolution,
            allow_unknown_models=True,
            extra=extra,
            extra_fields=self.extra_fields,
        )
        if self.models is not None and request.size not in self.models[model]:
            raise InvalidRequestError(
                f"resolution must be one of {', '.join(self.models[model])} for {model}, got {resolution!r}"
            )
        return request

    def seconds_value(self, seconds: str) -> str | int:
        """``seconds`` as this server wants it on the wire."""
        return int(seconds) if self.seconds_type == "int" else seconds


_OPEN_MODEL_FIELDS = ("seed", "negative_prompt", "fps", "num_frames", "guidance_scale", "num_inference_steps")

PROFILES: dict[str, ProviderProfile] = {
    profile.name: profile
    for profile in (
        ProviderProfile(
            "openai",
            "OpenAI's hosted Sora API (openai-python: shuts down 2026-09-24)",
            "https://api.openai.com/v1",
            models=dict(MODEL_SIZES),
            seconds=SECONDS,
            price_per_second=dict(DEFAULT_PRICES),
        ),
        ProviderProfile(
            "litellm",
            "LiteLLM proxy routing /v1/videos to OpenAI, Azure, Google Veo, Runway",
            "http://localhost:4000/v1",
            supports_variants=False,
            supports_list=False,
            supports_delete=False,
            notes=(
                "video ids encode the route: the id from create is kept (retrieve answers lack the model); "
                "thumbnails come back as the MP4 and are skipped; set router_settings.num_retries: 0 "
                "so the proxy never re-sends a create (a second paid job)"
            ),
        ),
        ProviderProfile(
            "vllm-omni",
            "vLLM-Omni serving open video models on your own GPUs",
            "http://localhost:8000/v1",
            example_model="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
            seconds_type="int",
            extra_fields=_OPEN_MODEL_FIELDS,
        ),
        ProviderProfile(
            "sglang",
            "SGLang diffusion serving open video models",
            "http://localhost:30000/v1",
            example_model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            seconds_type="int",
            extra_fields=_OPEN_MODEL_FIELDS,
        ),
        ProviderProfile(
            "generic",
            "any other server with POST /v1/videos, GET /v1/videos/{id} and /content",
            "http://localhost:8080/v1",
            notes="assumes the whole contract; list, delete and variants degrade with a warning if missing",
        ),
    )
}


def register(profile: ProviderProfile) -> None:
    """Add a profile, or replace the one with the same name."""
    PROFILES[profile.name] = profile


def get_profile(name: str) -> ProviderProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidRequestError(f"provider must be one of {', '.join(PROFILES)} or 'auto', got {name!r}") from None


def is_openai_hosted(base_url: str) -> bool:
    return urlparse(base_url).hostname == "api.openai.com"


_detected: dict[str, str] = {}


def resolve_profile(provider: str | None, base_url: str) -> ProviderProfile:
    """The named profile; ``"auto"`` asks the server; None: openai for OpenAI's host, else generic."""
    if provider == "auto":
        if base_url not in _detected:
            _detected[base_url] = detect_provider(base_url)
        return PROFILES[_detected[base_url]]
    if provider:
        return get_profile(provider)
    return PROFILES["openai" if is_openai_hosted(base_url) else "generic"]


def detect_provider(base_url: str, timeout: float = 3.0) -> str:
    """Tell the server kind from answers only that kind gives (no key, no paid call)."""
    if is_openai_hosted(base_url):
        return "openai"
    root = base_url.rstrip("/").removesuffix("/v1")
    probes = (  # (profile, path, a marker only that server's answer holds)
        ("litellm", "/health/liveliness", "alive"),
        ("sglang", "/get_server_info", "model_path"),
        ("vllm-omni", "/version", '"version"'),
    )
    for name, path, marker in probes:
        try:
            with urllib.request.urlopen(root + path, timeout=timeout) as answer:
                if marker in answer.read(65536).decode("utf-8", "replace").lower():
                    return name
        except (OSError, ValueError):
            continue
    return "generic"
