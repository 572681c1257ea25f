"""Servers that speak the Videos API, and what each one supports.

Profiles are data: one place says which models and sizes a server kind takes,
how it treats `seconds` and `variant`, whether list/delete exist and which extra
create fields it understands. Users may register their own with `register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .core.request import MODEL_SIZES


@dataclass(frozen=True)
class ProviderProfile:
    name: str
    description: str
    example_base_url: str
    models: dict[str, tuple[str, ...]] | None  # None: any model, any WIDTHxHEIGHT
    supports_variants: bool = True
    supports_list: bool = True
    supports_delete: bool = True
    extra_fields: tuple[str, ...] = ()
    price_per_second: dict[str, float] = field(default_factory=dict)
    notes: str = ""


_OPEN_MODEL_FIELDS = ("seed", "negative_prompt", "fps", "num_frames", "guidance_scale", "num_inference_steps")

PROFILES: dict[str, ProviderProfile] = {
    profile.name: profile
    for profile in (
        ProviderProfile(
            "openai",
            "OpenAI's hosted Sora API (scheduled to shut down on 2026-09-24)",
            "https://api.openai.com/v1",
            dict(MODEL_SIZES),
            price_per_second={"sora-2": 0.10, "sora-2-pro": 0.30, "sora-2-pro@1024": 0.50},
        ),
        ProviderProfile(
            "litellm",
            "LiteLLM proxy routing /v1/videos to OpenAI, Azure, Veo, Runway",
            "http://localhost:4000/v1",
            None,
            supports_variants=False,
            supports_list=False,
            supports_delete=False,
            notes="keep the id returned by create; set router_settings.num_retries: 0 so creates are not re-sent",
        ),
        ProviderProfile(
            "vllm-omni",
            "vLLM-Omni serving open video models on your GPUs",
            "http://localhost:8000/v1",
            None,
            extra_fields=_OPEN_MODEL_FIELDS,
        ),
        ProviderProfile(
            "sglang",
            "SGLang diffusion serving open video models",
            "http://localhost:30000/v1",
            None,
            extra_fields=_OPEN_MODEL_FIELDS,
        ),
        ProviderProfile(
            "generic",
            "any other server implementing POST/GET /v1/videos and /content",
            "http://localhost:8080/v1",
            None,
        ),
    )
}


def register(profile: ProviderProfile) -> None:
    PROFILES[profile.name] = profile


def get_profile(name: str) -> ProviderProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"provider must be one of {', '.join(PROFILES)}, got {name!r}") from None


def print_providers() -> None:
    for profile in PROFILES.values():
        models = ", ".join(profile.models) if profile.models else "any (passed through)"
        print(f"{profile.name:10} {profile.description}")
        print(f"{'':10} base URL e.g. {profile.example_base_url}; models: {models}")
        if profile.extra_fields:
            print(f"{'':10} extra create fields: {', '.join(profile.extra_fields)}")
        if profile.notes:
            print(f"{'':10} note: {profile.notes}")
