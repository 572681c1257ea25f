"""Jobs made from another video: remix, edit and extend, with create's guarantees.

A :class:`DerivedRequest` is checked before anything is sent and has a fingerprint
(operation, the source's id or the local file's SHA-256, prompt, the extension's
length, request id), so :mod:`.pipeline` makes it as it makes a create (one path,
:func:`~.pipeline.plan_job`):
a receipt is written the moment the job is answered, a rerun follows that job, an
already delivered output is skipped with no API call, and a job the server lost is
made again. A source in S3 is fetched to a temporary file first (:func:`fetch_source`)
and uploaded from there; its digest, not its URI, is what the fingerprint holds.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..api.providers import ProviderProfile
from ..api.references import EXTENSION_SECONDS, check_prompt, video_source
from ..api.request import VideoRequest
from ..errors import InvalidRequestError
from ..media.containers import mp4_problem
from ..storage.destinations import S3Client, download_s3_file

if TYPE_CHECKING:
    from openai.types import Video

    from ..api.client import VideosClient

DerivedOperation = Literal["remix", "edit", "extend"]
DERIVED_OPERATIONS: tuple[DerivedOperation, ...] = ("remix", "edit", "extend")
_HASH_CHUNK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_extension_duration(duration: object, field: str = "duration") -> str:
    """An extension segment's length: 4, 8, 12, 16 or 20 seconds (the API's ``seconds``)."""
    text = str(duration).strip()
    if text not in EXTENSION_SECONDS:
        raise InvalidRequestError(
            f"{field} (the extension's length) must be one of {', '.join(EXTENSION_SECONDS)} seconds, got {duration!r}"
        )
    return text


def check_derived(
    operation: str, prompt: object, duration: int | str | None = None
) -> tuple[DerivedOperation, str, str | None]:
    """The checks that need no source: operation, prompt, and extend's length (the API's ``seconds``)."""
    if operation not in DERIVED_OPERATIONS:
        raise InvalidRequestError(f"operation must be one of {', '.join(DERIVED_OPERATIONS)}, got {operation!r}")
    text = check_prompt(prompt)
    seconds: str | None = None
    if operation == "extend":
        if duration is None:
            raise InvalidRequestError(
                f"duration (the extension's length) is required: one of {', '.join(EXTENSION_SECONDS)} seconds"
            )
        seconds = check_extension_duration(duration)
    elif duration is not None:
        raise InvalidRequestError(f"duration applies to extend only; a {operation} keeps its source's length")
    return operation, text, seconds


def check_support(profile: ProviderProfile, operation: DerivedOperation, kind: Literal["id", "upload"]) -> None:
    """Refuse what the provider does not serve: the operation, or this kind of source (by id, uploaded)."""
    profile.require(operation)
    if operation in ("edit", "extend"):
        profile.require(operation, source=kind)
    elif kind != "id":
        raise InvalidRequestError(f"source: {operation} takes the id of a video the server made (such as video_123)")


@dataclass(frozen=True)
class DerivedRequest:
    """A checked remix, edit or extension. Build it with :meth:`build`.

    The source is a server's video id (``video_id``) or a local MP4 (``path``, with its
    ``sha256``). ``follows``: in a chain of jobs (a storyboard), the receipt key of the
    job this one extends; it stands for the source in the fingerprint, so every key of
    the chain is known before any job exists.
    """

    operation: DerivedOperation
    prompt: str
    video_id: str | None = None
    path: Path | None = None
    sha256: str | None = None
    # extend only: the new segment's length (the API's word; ``duration`` in ours).
    seconds: str | None = None
    follows: str | None = None

    @classmethod
    def build(
        cls,
        operation: str,
        prompt: str,
        source: str | Path,
        *,
        duration: int | str | None = None,
        follows: str | None = None,
    ) -> DerivedRequest:
        """Validate; raises :class:`InvalidRequestError` (a ``ValueError``) naming the field.

        ``source``: a video id, or a local MP4 path (an ``s3://`` URI is fetched first with
        :func:`fetch_source`). ``duration``: extend's new segment, 4, 8, 12, 16 or 20 s.
        """
        operation, prompt, seconds = check_derived(operation, prompt, duration)
        if is_s3_source(source):
            raise InvalidRequestError(f"source {str(source).strip()} is in S3: fetch it first (fetch_source)")
        found = video_source(source, field="source")
        if found.path is not None:
            if operation == "remix":
                raise InvalidRequestError(
                    f"source: remix takes the id of a video the server made (such as video_123), got the file {source}"
                )
            digest = file_sha256(found.path)
            return cls(operation, prompt, path=found.path, sha256=digest, seconds=seconds, follows=follows)
        return cls(operation, prompt, video_id=found.video_id, seconds=seconds, follows=follows)

    @property
    def source(self) -> str | Path:
        """What the client is given: the video id, or the local file."""
        if self.video_id is not None:
            return self.video_id
        assert self.path is not None
        return self.path

    @property
    def source_kind(self) -> Literal["id", "upload"]:
        return "id" if self.video_id is not None else "upload"

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()

    def describe(self) -> str:
        """A few words for logs: "extend of video_123 by 4 s"."""
        source = self.video_id or (self.path.name if self.path else "?")
        return f"{self.operation} of {source}" + (f" by {self.seconds} s" if self.seconds else "")

    def check(self, profile: ProviderProfile) -> None:
        """Refuse, before any request, what the server does not do (a ``ValueError`` naming provider and operation)."""
        check_support(profile, self.operation, self.source_kind)

    def fingerprint(self, *, request_id: str | None = None) -> str:
        """A stable key for "the same paid job": operation, source (or the job it follows), prompt, seconds, id."""
        payload: dict[str, Any] = {
            "operation": self.operation,
            "prompt": self.prompt,
            "seconds": self.seconds,
            "request_id": request_id,
        }
        if self.follows is not None:
            payload["follows"] = self.follows
        elif self.video_id is not None:
            payload["source"] = self.video_id
        else:
            payload["source_sha256"] = self.sha256
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def send(self, client: VideosClient, reconcile_since: float | None = None) -> Video:
        """One job-making request through the client's send-once rules."""
        if self.operation == "remix":
            assert self.video_id is not None
            return client.remix(self.video_id, prompt=self.prompt, reconcile_since=reconcile_since)
        if self.operation == "edit":
            return client.edit(prompt=self.prompt, video=self.source, reconcile_since=reconcile_since)
        assert self.seconds is not None
        return client.extend(
            prompt=self.prompt, seconds=self.seconds, video=self.source, reconcile_since=reconcile_since
        )


@dataclass(frozen=True)
class DerivedJob:
    """A paid derived job as its task reports it: enough to wait for, record and deliver it."""

    video_id: str
    model: str
    seconds: str
    size: str
    how: str = "created"

    def as_request(self, prompt: str) -> VideoRequest:
        """The job as a :class:`VideoRequest` (model, length, size as made), for delivery metadata and records."""
        return request_of({"model": self.model, "seconds": self.seconds, "size": self.size}, prompt)


def request_of(video: Mapping[str, Any], prompt: str) -> VideoRequest:
    """A finished job (the API's fields) described as the request that would make it; not validated again."""
    return VideoRequest(
        prompt=prompt,
        model=str(video.get("model") or ""),
        seconds=str(video.get("seconds")),
        size=str(video.get("size")),
    )


@dataclass(frozen=True)
class FetchedSource:
    """A source ready for :meth:`DerivedRequest.build`: the id or path given, or a temporary copy of an S3 object."""

    source: str | Path
    temporary: Path | None = None

    def cleanup(self) -> None:
        if self.temporary is not None:
            self.temporary.unlink(missing_ok=True)


def is_s3_source(source: str | Path) -> bool:
    return isinstance(source, str) and source.strip().startswith("s3://")


def fetch_source(source: str | Path, *, s3: S3Client | None = None, directory: Path | None = None) -> FetchedSource:
    """An ``s3://`` MP4 downloaded to a temporary file (removed by ``cleanup()``); anything else as given."""
    if not is_s3_source(source):
        return FetchedSource(source)
    uri = str(source).strip()
    handle = tempfile.NamedTemporaryFile(prefix="sora-source-", suffix=".mp4", dir=directory, delete=False)  # noqa: SIM115
    handle.close()
    path = Path(handle.name)
    try:
        download_s3_file(uri, path, s3)
        if (problem := mp4_problem(path)) is not None:
            raise InvalidRequestError(f"source: {uri} is not an MP4 (video/mp4) file: {problem}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return FetchedSource(path, temporary=path)
