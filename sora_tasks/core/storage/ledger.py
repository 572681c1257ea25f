"""A ledger of paid jobs still to be delivered: one small JSON record per video.

Submitters add a record and return at once; a later sweep (the ``collect-pending``
deployment) delivers finished videos and removes their records. A flow run that
failed after its video was paid for (timeout, upload error) adds one too, so the
video is not lost. The ledger lives in a local folder or under an ``s3://`` prefix
that every worker can see; one object per video means no write ever races another.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

from ..ids import ID_RULE, is_safe_id, path_component
from ..text import shown
from .destinations import S3Client
from .records import RecordStore, sora_home


def default_location() -> str:
    """``$SORA_LEDGER``, else ``pending`` under ``$SORA_HOME`` (default ``~/.prefect-sora``)."""
    return os.environ.get("SORA_LEDGER") or str(sora_home() / "pending")


class MadeAs(Protocol):
    """What a record keeps of the request a job was made for (a ``VideoRequest`` is one)."""

    @property
    def model(self) -> str: ...
    @property
    def seconds(self) -> str: ...
    @property
    def size(self) -> str: ...


@dataclass(frozen=True)
class PendingVideo:
    video_id: str
    output: str  # a path or s3:// URI template
    model: str = ""
    duration: str = ""
    resolution: str = ""
    base_url: str | None = None  # None: $OPENAI_BASE_URL on the sweeping machine
    provider: str | None = None  # a profile name (sora_tasks.core.api.providers)
    api_block: str | None = None  # a saved VideosApi block's *name*, never a key
    destination_block: str | None = None  # a saved S3Bucket block lending its credentials
    reason: str = "submitted"
    submitted_at: float = field(default_factory=time.time)
    # The quality setting it was submitted with (fail, warn, off, retry=N; None: the
    # sweep's own). A sweep never pays, so under retry=N a failing video is rejected.
    quality: str | None = None

    @classmethod
    def of(
        cls,
        video_id: str,
        request: MadeAs,
        output: str,
        *,
        base_url: str | None,
        provider: str | None,
        api_block: str | None = None,
        destination_block: str | None = None,
        reason: str = "submitted",
        quality: str | None = None,
    ) -> PendingVideo:
        """The record of a job made for ``request``: where it goes and how to reach its server."""
        return cls(
            video_id=video_id,
            output=output,
            model=request.model,
            duration=request.seconds,
            resolution=request.size,
            base_url=base_url,
            provider=provider,
            api_block=api_block,
            destination_block=destination_block,
            reason=reason,
            quality=quality,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PendingVideo:
        """A record as written; ``ValueError`` for one that is not a record or names an unsafe id."""
        try:
            data = json.loads(text)
            record = cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
        except (ValueError, TypeError) as error:
            raise ValueError(f"not a ledger record: {shown(str(error))}") from error
        if not is_safe_id(record.video_id):
            raise ValueError(f"the record's video_id {shown(record.video_id)} is not an id ({ID_RULE})")
        if not isinstance(record.output, str) or not record.output:
            raise ValueError(f"the record of {record.video_id} has no output")
        return record


class Ledger:
    def __init__(self, location: str | None = None, client: S3Client | None = None) -> None:
        self.location = location or default_location()
        self._store = RecordStore(self.location, client, what="ledger")

    def __repr__(self) -> str:
        return f"Ledger({self.location!r})"

    @property
    def is_local(self) -> bool:
        return self._store.is_local

    def add(self, record: PendingVideo) -> None:
        """Record a job; a relative output path is made absolute, as a sweep may run elsewhere."""
        if "://" not in record.output:
            record = replace(record, output=os.path.abspath(os.path.expanduser(record.output)))
        self._store.put(path_component(record.video_id), record.to_json())

    def remove(self, video_id: str) -> bool:
        """Forget a record; True if there was one."""
        if self._store.get(path_component(video_id)) is None:
            return False
        self._store.delete(path_component(video_id))
        return True

    def forget(self, video_id: str) -> None:
        """Forget a record without looking first (a sweep that just read it): one request, no error if gone."""
        self._store.delete(path_component(video_id))

    def get(self, video_id: str) -> PendingVideo | None:
        """The record of ``video_id`` (or of the record name a listing gave); ``ValueError`` when it
        cannot be trusted: not a record, an unsafe id, or filed under another video's name."""
        name = path_component(video_id)
        text = self._store.get(name)
        if text is None:
            return None
        record = PendingVideo.from_json(text)
        if path_component(record.video_id) != name:
            raise ValueError(f"the record named {shown(name)} is for another video, {shown(record.video_id)}")
        return record

    def video_ids(self) -> Iterator[str]:
        """Every recorded video id, listed as it is consumed (S3 a page at a time), in listing order."""
        return self._store.names()

    def records(self) -> Iterator[PendingVideo]:
        """Every record, read one at a time as it is consumed: a ledger of any size, never all in memory.

        Listing order (S3: by key), not age. A record removed after it was listed (another
        sweep delivered it meanwhile) is skipped.
        """
        for video_id in self.video_ids():
            record = self.get(video_id)
            if record is not None:
                yield record

    def pending(self) -> list[PendingVideo]:
        """Every record, oldest first. Reads the whole ledger first: a sweep lists :meth:`video_ids` instead."""
        return sorted(self.records(), key=lambda record: record.submitted_at)
