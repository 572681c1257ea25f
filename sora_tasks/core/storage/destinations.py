"""Where finished videos go: a local path or ``s3://bucket/key``.

S3 goes through boto3's managed transfer (multipart above a threshold, parallel
parts, a failed multipart upload aborted by boto3), and honours boto3's credential
chain and ``AWS_ENDPOINT_URL``, so MinIO, LocalStack or moto work unchanged.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import shutil
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, InvalidRequestError, StorageError, TransientError
from ..text import first_control, shorten, shown

# boto3 clients are built at run time; without stubs they are typed as Any.
S3Client = Any

TEMPLATE_FIELDS = ("video_id", "date", "model")
_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024
# S3 keeps a key to 1024 bytes; file systems a name to 255 and a path to 4096 (Linux's
# PATH_MAX). Longer fails only when the file is written: after the video was paid for.
MAX_KEY_BYTES = 1024
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


@dataclass(frozen=True)
class Destination:
    """A parsed destination: ``bucket``/``key`` for S3, ``path`` for local files."""

    uri: str
    bucket: str | None = None
    key: str | None = None
    path: Path | None = None

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None


@dataclass(frozen=True)
class StoredVideo:
    uri: str
    bytes: int
    sha256: str


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); raises naming what is wrong."""
    if not uri.startswith("s3://"):
        raise InvalidRequestError(f"S3 URI must start with s3://, got {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidRequestError(f"S3 URI {uri!r} names no bucket; use s3://BUCKET/path/name.mp4")
    if "{" in bucket:
        raise InvalidRequestError(f"the bucket in {uri!r} cannot be a template; put {{...}} fields in the key")
    if not _BUCKET_PATTERN.match(bucket) or ".." in bucket:
        raise InvalidRequestError(
            f"S3 bucket name {bucket!r} in {uri!r} is not valid (3-63 characters: a-z, 0-9, '.', '-')"
        )
    return bucket, key


def render_template(template: str, *, video_id: str, model: str, when: dt.datetime | None = None) -> str:
    """Fill ``{video_id}``, ``{date}`` and ``{model}``; any other field is an error."""
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    unknown = sorted(set(fields) - set(TEMPLATE_FIELDS))
    if unknown:
        raise InvalidRequestError(
            f"output template field(s) {unknown} are not known; allowed: {', '.join(TEMPLATE_FIELDS)}"
        )
    when = when or dt.datetime.now(dt.timezone.utc)
    return template.format(
        video_id=_component(video_id, "video_id"), model=_component(model, "model"), date=when.strftime("%Y-%m-%d")
    )


def _component(value: str, field: str) -> str:
    """A server's id or model as one path component: ``/`` becomes ``_``; anything that could
    climb out of the folder (``..``, a backslash, control characters) is refused.

    The client checks ids and models where a server answers (see :mod:`..ids`); this is the
    last line before a path is made of them.
    """
    if not value or ".." in value or "\\" in value or any(ord(char) < 32 for char in value):
        raise InvalidRequestError(
            f"{field} {shown(value)} cannot name a file: it is empty or holds '..' or control characters"
        )
    return value.replace("/", "_")


def check_path_text(text: str, what: str) -> str:
    """Refuse a path or key with a control character: a NUL fails the write after the job was
    paid, and a newline splits a log line and the one line of stdout that is the URI."""
    index = first_control(text)
    if index is not None:
        raise InvalidRequestError(
            f"{what} must not contain control characters (NUL, newlines, ...): U+{ord(text[index]):04X} "
            f"at character {index} of {shown(text)}"
        )
    return text


def _check_local_lengths(path: str, what: str) -> None:
    names = [name for name in path.split(os.sep) if name]
    longest = max(names, key=lambda name: len(name.encode()), default="")
    if len(longest.encode()) > MAX_NAME_BYTES:
        raise InvalidRequestError(
            f"{what}: the name {shorten(longest, 60)!r} is {len(longest.encode()):,} bytes; "
            f"file systems allow {MAX_NAME_BYTES}"
        )
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidRequestError(
            f"{what} is {len(path.encode()):,} bytes long ({shown(path, 60)}); paths may have {MAX_PATH_BYTES}"
        )


def check_key(key: str, uri: str) -> str:
    if not key:
        raise InvalidRequestError(f"S3 destination {uri!r} has no key (use s3://bucket/path/name.mp4)")
    if key.startswith("/"):
        raise InvalidRequestError(f"S3 key must be relative, got absolute key {key!r}")
    if any(part in ("..", ".") for part in key.split("/")):
        raise InvalidRequestError(f"S3 key must not contain '.' or '..' segments, got {key!r}")
    check_path_text(key, "S3 key")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidRequestError(
            f"S3 key is {len(key.encode()):,} bytes long ({shown(key, 60)}); S3 allows {MAX_KEY_BYTES}"
        )
    return key


def resolve_destination(output: str | Path, *, video_id: str, model: str) -> Destination:
    """Expand templates and decide the final object key or file path.

    A destination ending in ``/`` (or an existing directory) gets ``{video_id}.mp4``.
    """
    text = str(output)
    if text.startswith("s3://"):
        split_s3_uri(text)  # the bucket is checked before any template is filled
        if text.endswith("/"):
            text += "{video_id}.mp4"
    elif text.endswith("/") or _is_folder(text):
        text = text.rstrip("/") + "/{video_id}.mp4"
    rendered = render_template(text, video_id=video_id, model=model)
    if rendered.startswith("s3://"):
        bucket, key = split_s3_uri(rendered)
        return Destination(uri=f"s3://{bucket}/{check_key(key, rendered)}", bucket=bucket, key=key)
    if "://" in rendered:
        raise InvalidRequestError(f"output must be a local path or s3://bucket/key, got {shown(rendered)}")
    check_path_text(rendered, "output")
    path = Path(rendered).expanduser().absolute()
    _check_local_lengths(str(path), "output")
    return Destination(uri=str(path), path=path)


def _is_folder(text: str) -> bool:
    """An existing directory; a name the system cannot even look up (too long, a NUL) is none."""
    try:
        return Path(text).expanduser().is_dir()
    except (OSError, ValueError):
        return False  # refused, with the reason, once the template is filled


def exact_destination(uri: str) -> Destination:
    """The destination an already resolved URI names (a delivered object's), with no template filled again."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        return Destination(uri=f"s3://{bucket}/{check_key(key, uri)}", bucket=bucket, key=key)
    path = Path(uri).expanduser().absolute()
    return Destination(uri=str(path), path=path)


PREVIEW_EXTENSIONS = {"image/webp": ".webp", "image/jpeg": ".jpg", "image/png": ".png"}
# The previews fetched beside every video, in this order.
PREVIEW_VARIANTS = ("thumbnail", "spritesheet")


def variant_output(output: str, variant: str, content_type: str) -> str:
    """Where a preview goes: beside the video, ``clip.mp4`` -> ``clip.thumbnail.webp``."""
    extension = PREVIEW_EXTENSIONS.get(content_type.split(";")[0].strip(), ".img")
    if output.endswith("/"):
        output += "{video_id}.mp4"
    suffix = Path(output).suffix
    stem = output[: -len(suffix)] if suffix else output
    return f"{stem}.{variant}{extension}"


def preview_outputs(output: str) -> list[tuple[str, str]]:
    """(variant, name) for every name a preview of ``output`` may take: each extension a server may answer."""
    kinds = [*PREVIEW_EXTENSIONS, "unknown/type"]  # an unknown type is stored as .img
    return [(variant, variant_output(output, variant, kind)) for variant in PREVIEW_VARIANTS for kind in kinds]


# SigV4 presigned URLs live at most seven days (and no longer than the credentials that signed them).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


def check_presign_seconds(seconds: int) -> int:
    """A presigned URL's lifetime in seconds: 1 to seven days (SigV4's limit)."""
    if not 1 <= int(seconds) <= MAX_PRESIGN_SECONDS:
        raise InvalidRequestError(
            f"preview_url_seconds must be between 1 and {MAX_PRESIGN_SECONDS} (7 days, SigV4's limit), got {seconds}"
        )
    return int(seconds)


def presign(uri: str, seconds: int = MAX_PRESIGN_SECONDS, client: S3Client | None = None) -> str:
    """A URL a browser can load: a presigned GET for ``s3://`` (no request is sent), else the local path.

    Signed with ``client``'s credentials (default: boto3's chain), which must sign SigV4
    (``Config(signature_version="s3v4")``; the default client does). A URL signed by
    temporary credentials (a role) stops working when they expire, whatever ``seconds`` says.
    """
    if not uri.startswith("s3://"):
        return uri
    bucket, key = split_s3_uri(uri)
    url: str = (client or s3_client()).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=check_presign_seconds(seconds)
    )
    return url


def validate_output(output: str | Path) -> None:
    """Check an output template before any paid call (with a placeholder id)."""
    resolve_destination(output, video_id="video_placeholder", model="sora-2")


def s3_client() -> S3Client:
    """A boto3 S3 client from the default chain; ``AWS_ENDPOINT_URL`` is honoured by boto3 itself.

    Building a client costs tens of milliseconds of CPU, so one is shared (boto3
    clients are thread-safe) until the settings that shape it change.
    """
    settings = tuple(os.environ.get(name) for name in _CLIENT_SETTINGS)
    return _shared_s3_client(settings)


_CLIENT_SETTINGS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


# The shared client serves every batch thread at once (two per job in flight); with
# botocore's default pool of 10 connections the rest were opened and thrown away.
S3_MAX_CONNECTIONS = 64


@lru_cache(maxsize=8)
def _shared_s3_client(settings: tuple[str | None, ...]) -> S3Client:
    import boto3
    from botocore.config import Config

    # SigV4 for presigned URLs too: botocore still presigns S3 with SigV2 unless told, which
    # buckets created since 2020 and newer regions refuse (and which ignores the 7-day cap).
    config = Config(max_pool_connections=S3_MAX_CONNECTIONS, signature_version="s3v4")
    return boto3.session.Session().client("s3", config=config)


def check_bucket(bucket: str, client: S3Client | None = None) -> None:
    """Fail before generation when the bucket does not exist (a 403 is let through)."""
    from botocore.exceptions import ClientError, NoCredentialsError

    client = client or s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError as error:
        raise ConfigurationError(
            f"no AWS credentials to write to s3://{bucket}: configure boto3's chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or a role)"
        ) from error
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            raise InvalidRequestError(f"S3 bucket {bucket!r} does not exist") from error
        # 403: the role may write objects without being allowed HeadBucket; try the upload.


def read_s3_object(uri: str, client: S3Client | None = None, *, limit: int | None = None) -> bytes:
    """The object's bytes; with ``limit``, an object larger than that is refused without reading it whole."""
    from botocore.exceptions import ClientError, NoCredentialsError

    bucket, key = split_s3_uri(uri)
    check_key(key, uri)
    client = client or s3_client()
    try:
        answer = client.get_object(Bucket=bucket, Key=key)
        body = answer["Body"]
        if limit is None:
            return body.read()  # type: ignore[no-any-return]
        # The length S3 states, then what is read: never more than one byte past the limit.
        stated = int(answer.get("ContentLength") or 0)
        data: bytes = b"" if stated > limit else body.read(limit + 1)
        body.close()
        if stated > limit or len(data) > limit:
            raise InvalidRequestError(f"{uri} is {max(stated, len(data)):,} bytes; the limit is {limit:,} bytes")
        return data
    except NoCredentialsError as error:
        raise ConfigurationError(f"no AWS credentials to read {uri}: configure boto3's credential chain") from error
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        raise InvalidRequestError(f"cannot read {uri}: {code or error}") from error


def download_s3_file(uri: str, path: Path, client: S3Client | None = None) -> int:
    """Stream the S3 object ``uri`` to ``path`` (boto3's managed transfer); returns its size.

    A missing object or bucket, or a refusal, is bad input (nothing was paid for yet); a
    throttled or failed transfer is a :class:`TransientError`. ``path`` is removed on failure.
    """
    from boto3.exceptions import S3TransferFailedError
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, key = split_s3_uri(uri)
    check_key(key, uri)
    client = client or s3_client()
    try:
        client.download_file(bucket, key, str(path))
    except NoCredentialsError as error:
        path.unlink(missing_ok=True)
        raise ConfigurationError(f"no AWS credentials to read {uri}: configure boto3's credential chain") from error
    except (ClientError, BotoCoreError, S3TransferFailedError) as error:
        path.unlink(missing_ok=True)
        if _is_transient_s3(error):
            raise TransientError(f"download of {uri} failed: {error}") from error
        code = error.response.get("Error", {}).get("Code", "") if isinstance(error, ClientError) else ""
        if code in ("404", "NoSuchKey", "NoSuchBucket"):
            raise InvalidRequestError(f"no such S3 object: {uri}") from error
        raise InvalidRequestError(f"cannot read {uri}: {code or error}") from error
    return path.stat().st_size


def object_metadata(
    video_id: str,
    model: str,
    seconds: str,
    size: str,
    prompt_sha256: str,
    sha256: str,
    fingerprint: str | None = None,
) -> dict[str, str]:
    """S3 object metadata; ``fingerprint`` (the request's receipt key) lets a rerun see it is done."""
    metadata = {
        "video-id": video_id,
        "model": model,
        "seconds": seconds,
        "size": size,
        "prompt-sha256": prompt_sha256,
        "sha256": sha256,
    }
    if fingerprint:
        metadata["fingerprint"] = fingerprint
    return metadata


def stored_object(destination: Destination, client: S3Client | None = None) -> tuple[int, dict[str, str]] | None:
    """(size, metadata) of what is at ``destination`` now, or None if nothing is there."""
    if destination.path is not None:
        return (destination.path.stat().st_size, {}) if destination.path.is_file() else None
    from botocore.exceptions import ClientError

    try:
        head = (client or s3_client()).head_object(Bucket=destination.bucket, Key=destination.key)
    except ClientError as error:
        if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return None
        raise
    return int(head["ContentLength"]), dict(head.get("Metadata", {}))


def list_uris(prefix: str, client: S3Client | None = None) -> Iterator[str]:
    """The ``s3://`` URI of every object under the S3 prefix ``prefix``, page by page."""
    bucket, key_prefix = split_s3_uri(prefix)
    paginator = (client or s3_client()).get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=key_prefix):
        for item in page.get("Contents", []):
            yield f"s3://{bucket}/{item['Key']}"


def store_file(
    source: Path,
    destination: Destination,
    *,
    sha256: str,
    content_type: str = "video/mp4",
    metadata: dict[str, str] | None = None,
    client: S3Client | None = None,
    multipart_threshold: int = MULTIPART_THRESHOLD,
) -> StoredVideo:
    """Copy ``source`` to ``destination`` and verify what landed.

    S3 uploads above ``multipart_threshold`` go in parallel parts; boto3 aborts a
    failed multipart upload, so no partial object is left behind.
    """
    size = source.stat().st_size
    if destination.path is not None:
        destination.path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target then rename: readers never see half a file.
        partial = destination.path.with_name(f".{destination.path.name}.{uuid.uuid4().hex}.part")
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, destination.path)
        finally:
            partial.unlink(missing_ok=True)
        return StoredVideo(destination.uri, size, sha256)
    return _upload_s3(source, destination, size, sha256, content_type, metadata or {}, client, multipart_threshold)


_TRANSIENT_S3_CODES = ("SlowDown", "RequestTimeout", "Throttling", "InternalError", "ServiceUnavailable")


def _is_transient_s3(error: Exception) -> bool:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

    if isinstance(error, (ConnectionError, ReadTimeoutError)):
        return True
    if isinstance(error, S3UploadFailedError):
        # boto3's transfer manager flattens the cause into the message.
        return any(code in str(error) for code in _TRANSIENT_S3_CODES)
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.response.get("Error", {}).get("Code", "")
        return status >= 500 or code in _TRANSIENT_S3_CODES
    return False


def _upload_s3(
    source: Path,
    destination: Destination,
    size: int,
    sha256: str,
    content_type: str,
    metadata: dict[str, str],
    client: S3Client | None,
    multipart_threshold: int,
) -> StoredVideo:
    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    assert destination.bucket is not None and destination.key is not None
    client = client or s3_client()
    config = TransferConfig(
        multipart_threshold=multipart_threshold,
        multipart_chunksize=min(MULTIPART_CHUNK, max(multipart_threshold, 5 << 20)),
    )
    extra = {
        "ContentType": content_type,
        "Metadata": {**metadata, "sha256": sha256},
        "ChecksumAlgorithm": "SHA256",
    }
    try:
        if size < multipart_threshold:
            # One request; upload_file would start (and join) a 10-thread pool for it.
            with source.open("rb") as body:
                put = client.put_object(Bucket=destination.bucket, Key=destination.key, Body=body, **extra)
            if "ChecksumSHA256" in put:
                # S3 checked the body against the digest botocore sent with it before storing
                # it; that digest matching the download's means the bytes that landed are
                # the ones downloaded. No read-back request needed.
                if put["ChecksumSHA256"] != base64.b64encode(bytes.fromhex(sha256)).decode():
                    raise StorageError(
                        f"upload to {destination.uri} did not verify: S3 stored other bytes than were downloaded",
                        video_id=metadata.get("video-id"),
                        local_path=str(source),
                    )
                return StoredVideo(destination.uri, size, sha256)
        else:
            client.upload_file(str(source), destination.bucket, destination.key, ExtraArgs=extra, Config=config)
        head = client.head_object(Bucket=destination.bucket, Key=destination.key)
    except (ClientError, BotoCoreError, S3UploadFailedError) as error:
        if _is_transient_s3(error):
            raise TransientError(
                f"upload to {destination.uri} failed: {error}", video_id=metadata.get("video-id")
            ) from error
        raise StorageError(
            f"upload to {destination.uri} failed: {error}", video_id=metadata.get("video-id"), local_path=str(source)
        ) from error
    if head["ContentLength"] != size or head.get("Metadata", {}).get("sha256") != sha256:
        raise StorageError(
            f"upload to {destination.uri} did not verify (size {head['ContentLength']} != {size} or checksum differs)",
            video_id=metadata.get("video-id"),
            local_path=str(source),
        )
    return StoredVideo(destination.uri, size, sha256)
