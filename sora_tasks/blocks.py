"""Configuration as Prefect blocks: the Videos API connection, and S3 buckets as destinations.

``VideosApi`` (block type ``videos-api``) holds everything needed to reach a server; it
is created once, in the UI or from Python, and handed to flows as an object or by name,
the way prefect-aws hands out ``AwsCredentials``. Its key is a ``SecretStr``: Prefect
stores it encrypted and never shows it. A prefect-aws ``S3Bucket`` names where videos go.

    prefect block register -m sora_tasks.blocks
"""

from __future__ import annotations

from typing import Any, cast

from prefect.blocks.core import Block
from prefect_aws import S3Bucket
from pydantic import Field, SecretStr, field_validator

from .core.api.client import VideosClient
from .core.api.endpoints import DEFAULT_MAX_WAIT, DEFAULT_POLL_INTERVAL
from .core.api.settings import ApiSettings
from .core.errors import ConfigurationError, InvalidRequestError
from .core.media.quality import QualityThresholds, normalize_quality


class VideosApi(Block):
    """A server that speaks OpenAI's Videos API: OpenAI itself, a LiteLLM proxy, vLLM-Omni, SGLang."""

    _block_type_name = "Videos API"
    _block_type_slug = "videos-api"

    _description = (
        "Connection to a Sora (OpenAI Videos API) server for prefect-sora's flows: base URL, API key, "
        "provider kind, default model, polling, the shared rate limit and the quality check of finished "
        "videos. Leave the base URL and key empty to use OPENAI_BASE_URL / OPENAI_API_KEY on the worker."
    )
    _code_example = """
```python
from sora_tasks.blocks import VideosApi
from sora_tasks.flows.generate import generate_video

VideosApi(base_url="http://litellm:4000/v1", api_key="sk-...", provider="litellm").save("sora")

generate_video("A fox in the snow", output="s3://my-bucket/fox.mp4", api="sora")
api = VideosApi.load("sora")
client = api.get_client()  # a VideosClient (the OpenAI SDK with prefect-sora's reliability rules)
```
"""

    base_url: str | None = Field(
        default=None,
        title="Base URL",
        description="The /v1 URL of the server, e.g. http://litellm:4000/v1. Empty: $OPENAI_BASE_URL or OpenAI.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        title="API key",
        description="Stored encrypted by Prefect and never shown. Empty: $OPENAI_API_KEY on the worker.",
    )
    provider: str | None = Field(
        default=None,
        description="openai, litellm, vllm-omni, sglang, generic, or auto to ask the server. "
        "Empty: openai for api.openai.com, generic for any other server.",
    )
    model: str = Field(default="sora-2", description="The model used when a request names none.")
    request_timeout: float = Field(default=60.0, gt=0, description="Seconds before one HTTP request times out.")
    max_retries: int = Field(
        default=3, ge=0, description="The SDK's retries for reads (status, downloads); a create is never re-sent."
    )
    poll_interval: float = Field(
        default=DEFAULT_POLL_INTERVAL, gt=0, description="Seconds between status polls (the server's hint wins)."
    )
    max_wait: float = Field(default=DEFAULT_MAX_WAIT, gt=0, description="Seconds to wait for one video to render.")
    rate_limit_name: str | None = Field(
        default=None,
        title="Rate limit name",
        description="A Prefect global concurrency limit (with slot decay) shared by everyone using this account, "
        "e.g. sora-api; empty: creates are not rate-limited.",
    )

    render_limit_name: str | None = Field(
        default=None,
        title="Render limit name",
        description="A Prefect global concurrency limit (no slot decay) bounding how many jobs render at once "
        "across every worker, e.g. sora-rendering; a slot is held while a job renders and freed when it ends "
        "or its holder dies. Empty: only each batch's max_in_flight.",
    )

    quality: str = Field(
        default="fail",
        description="What happens to a finished video that fails the quality check (black, frozen, too short, "
        "wrong size...): fail (kept beside the output as .rejected.mp4, the run fails), warn (delivered with a "
        "warning), off (not checked), or retry=N (kept aside, and up to N new jobs are paid for).",
    )
    quality_thresholds: QualityThresholds = Field(
        default_factory=QualityThresholds,
        title="Quality thresholds",
        description="The limits of the quality check; the defaults pass real footage and catch broken renders.",
    )

    @field_validator("quality", mode="before")
    @classmethod
    def _quality_spelling(cls, value: object) -> str:
        return normalize_quality(value)

    max_download_mb: float = Field(
        default=4096.0,
        gt=0,
        title="Largest download (MB)",
        description="A video (or preview) larger than this is refused and not stored: a server that "
        "streams without end, or sends something that is no video, is stopped.",
    )

    def settings(self) -> ApiSettings:
        """The engine-agnostic settings the tasks use."""
        return ApiSettings(
            base_url=self.base_url,
            api_key=self.api_key,
            provider=self.provider,
            model=self.model,
            request_timeout=self.request_timeout,
            max_retries=self.max_retries,
            poll_interval=self.poll_interval,
            max_wait=self.max_wait,
            rate_limit_name=self.rate_limit_name,
            render_limit_name=self.render_limit_name,
            quality=self.quality,
            quality_thresholds=self.quality_thresholds,
            max_download_mb=self.max_download_mb,
        )

    def get_client(self) -> VideosClient:
        """This thread's client for this block, built once and kept (like ``get_s3_client()``)."""
        return self.settings().client()


def load_api(api: VideosApi | str | None) -> ApiSettings:
    """Settings from a block, the name of a saved one, or (None) the environment."""
    if api is None:
        return ApiSettings()
    if isinstance(api, str):
        try:
            api = cast(VideosApi, VideosApi.load(api))
        except ValueError as error:
            raise ConfigurationError(f"api: no VideosApi block named {api!r} ({error})") from error
    return api.settings()


def load_bucket(destination: S3Bucket | str | None) -> S3Bucket | None:
    """The S3Bucket block given, or the saved one of that name."""
    if destination is None or isinstance(destination, S3Bucket):
        return destination
    try:
        return cast(S3Bucket, S3Bucket.load(destination))
    except ValueError as error:
        raise ConfigurationError(f"destination: no S3Bucket block named {destination!r} ({error})") from error


def key_in_bucket(bucket: S3Bucket, key: str, *, what: str = "output") -> str:
    """``key`` inside the block's bucket and folder, as an ``s3://`` URI."""
    if "://" in key or key.startswith(("/", "~")):
        raise InvalidRequestError(f"with a destination block, {what} is a key inside its bucket, got {key!r}")
    folder = (bucket.bucket_folder or "").strip("/")
    return f"s3://{bucket.bucket_name}/{folder + '/' if folder else ''}{key.lstrip('/')}"


def bucket_client(bucket: S3Bucket | None) -> Any:
    """The block's S3 client (cached by prefect-aws), or None for boto3's default chain."""
    return bucket.credentials.get_s3_client() if bucket is not None else None


def presigning_client(bucket: S3Bucket | None) -> Any:
    """An S3 client with the block's credentials that presigns with SigV4 (None: the default chain's, which does).

    The block's own client presigns with botocore's default, SigV2, which newer buckets
    and regions refuse.
    """
    if bucket is None:
        return None
    from botocore.config import Config

    credentials: Any = bucket.credentials
    params = dict(credentials.aws_client_parameters.get_params_override())
    config = params.pop("config", None) or Config()
    if getattr(credentials, "region_name", None):
        params["region_name"] = credentials.region_name
    return credentials.get_boto3_session().client("s3", config=config.merge(Config(signature_version="s3v4")), **params)
