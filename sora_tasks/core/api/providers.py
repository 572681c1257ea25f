"""Servers that speak the Videos API, and what each kind supports.

Profiles are data, in this one place: which models, sizes and durations a server
kind takes, whether it wants ``seconds`` as a string or a number, whether it honours
``variant``, whether list and delete exist, which extra create fields it understands
(sent through the SDK's ``extra_body``), which operations beyond create it serves
(remix, edit, extend, characters, image references by URL or file id) and its price
per second for estimates. Users add or replace profiles with :func:`register`.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

from ..errors import InvalidRequestError
from .pricing import DEFAULT_PRICES
from .request import MODEL_SIZES, SECONDS, VideoRequest

# The operations a profile may lack: openai-python's videos.remix, edit, extend,
# create_character / get_character, and create's input_reference objects.
Operation = Literal["remix", "edit", "extend", "characters", "image_url", "file_id"]
OPERATIONS: tuple[Operation, ...] = ("remix", "edit", "extend", "characters", "image_url", "file_id")
# The operations whose source may be a video: by id ({"id": ...}) or an uploaded MP4.
VideoOperation = Literal["edit", "extend", "characters"]
VIDEO_OPERATIONS: tuple[VideoOperation, ...] = ("edit", "extend", "characters")


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
    supports_remix: bool = True
    supports_edit: bool = True
    supports_extend: bool = True
    supports_characters: bool = True
    # create's input_reference as {"image_url": ...} (http(s) or data: URL) / {"file_id": ...}.
    supports_image_url: bool = True
    supports_file_id: bool = True
    # Which video operations take a source by id, and which an uploaded MP4.
    video_ids: tuple[VideoOperation, ...] = VIDEO_OPERATIONS
    video_uploads: tuple[VideoOperation, ...] = VIDEO_OPERATIONS
    # OpenAI's own hosted API, which was scheduled to shut down on 2026-09-24: a client of
    # this profile reads "the videos endpoints are gone" answers as that shutdown.
    hosted_by_openai: bool = False

    def supports(self, operation: Operation) -> bool:
        return bool(getattr(self, f"supports_{operation}"))

    def require(self, operation: Operation, *, source: Literal["id", "upload"] | None = None) -> None:
        """Refuse, before any request, an operation (or a kind of source video) this server lacks."""
        if not self.supports(operation):
            supported = [name for name in OPERATIONS if self.supports(name)]
            raise InvalidRequestError(
                f"provider {self.name} does not support {_OPERATION_NAMES[operation]}; it supports "
                f"{', '.join(_OPERATION_NAMES[name] for name in supported) or 'none of the optional operations'}"
            )
        if source is None or operation not in VIDEO_OPERATIONS:
            return
        accepted = self.video_ids if source == "id" else self.video_uploads
        if operation not in accepted:
            given, other = ("a video id", "a local .mp4 path") if source == "id" else ("a local file", "a video id")
            raise InvalidRequestError(
                f"provider {self.name} cannot {_VERBS[operation]} {given}; give video as {other} instead"
            )

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


_OPERATION_NAMES: dict[str, str] = {
    "remix": "remix",
    "edit": "edit",
    "extend": "extend",
    "characters": "characters",
    "image_url": "image references by URL (input_reference image_url)",
    "file_id": "image references by file id (input_reference file_id)",
}
_VERBS = {"edit": "edit", "extend": "extend", "characters": "make a character from"}
_NO_OPERATIONS: dict[str, Any] = {
    "supports_remix": False,
    "supports_edit": False,
    "supports_extend": False,
    "supports_characters": False,
    "supports_image_url": False,
    "supports_file_id": False,
    "video_ids": (),
    "video_uploads": (),
}

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
            # The API's create_character takes an uploaded video only.
            video_ids=("edit", "extend"),
            hosted_by_openai=True,
        ),
        ProviderProfile(
            "litellm",
            "LiteLLM proxy routing /v1/videos to OpenAI, Azure, Google Veo, Runway",
            "http://localhost:4000/v1",
            supports_variants=False,
            supports_list=False,
            supports_delete=False,
            # Checked live, LiteLLM 1.108.7 in front of the emulator: remix, and edit and
            # extend of a video by id, reach the configured backend. An upload (edit,
            # characters) carries no routed id, so the proxy sends it to api.openai.com
            # instead; input_reference goes on as an uploaded image only.
            supports_characters=False,
            supports_image_url=False,
            supports_file_id=False,
            video_ids=("edit", "extend"),
            video_uploads=(),
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
            **_NO_OPERATIONS,
        ),
        ProviderProfile(
            "sglang",
            "SGLang diffusion serving open video models",
            "http://localhost:30000/v1",
            example_model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            seconds_type="int",
            extra_fields=_OPEN_MODEL_FIELDS,
            **_NO_OPERATIONS,
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
