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
from dataclasses import asdict, dataclass, field, replace

from .records import RecordStore, sora_home
from .request import VideoRequest
from .storage import S3Client


def default_location() -> str:
    """``$SORA_LEDGER``, else ``pending`` under ``$SORA_HOME`` (default ``~/.prefect-sora``)."""
    return os.environ.get("SORA_LEDGER") or str(sora_home() / "pending")


@dataclass(frozen=True)
class PendingVideo:
    video_id: str
    output: str  # a path or s3:// URI template
    model: str = ""
    duration: str = ""
    resolution: str = ""
    base_url: str | None = None  # None: $OPENAI_BASE_URL on the sweeping machine
    provider: str | None = None  # a profile name (sora_tasks.core.providers)
    api_block: str | None = None  # a saved VideosApi block's *name*, never a key
    destination_block: str | None = None  # a saved S3Bucket block lending its credentials
    reason: str = "submitted"
    submitted_at: float = field(default_factory=time.time)

    @classmethod
    def of(
        cls,
        video_id: str,
        request: VideoRequest,
        output: str,
        *,
        base_url: str | None,
        provider: str | None,
        api_block: str | None = None,
        destination_block: str | None = None,
        reason: str = "submitted",
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
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PendingVideo:
        data = json.loads(text)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


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
        self._store.put(record.video_id, record.to_json())

    def remove(self, video_id: str) -> bool:
        """Forget a record; True if there was one."""
        if self._store.get(video_id) is None:
            return False
        self._store.delete(video_id)
        return True

    def get(self, video_id: str) -> PendingVideo | None:
        text = self._store.get(video_id)
        return PendingVideo.from_json(text) if text is not None else None

    def pending(self) -> list[PendingVideo]:
        """Every record, oldest first."""
        records = [self.get(name) for name in self._store.names()]
        return sorted((record for record in records if record is not None), key=lambda record: record.submitted_at)
