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
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InvalidRequestError
from .storage import S3Client, check_key, s3_client, split_s3_uri

DEFAULT_LEDGER = "~/.prefect-sora/pending"


def default_location() -> str:
    return os.environ.get("SORA_LEDGER", DEFAULT_LEDGER)


@dataclass(frozen=True)
class PendingVideo:
    video_id: str
    output: str
    model: str = ""
    seconds: str = ""
    size: str = ""
    base_url: str | None = None
    api_key_secret: str | None = None  # a block *name*, never a key
    provider: str | None = None  # a profile name (sora_tasks.core.providers)
    s3_bucket_block: str | None = None  # output is then a key in that block's bucket
    reason: str = "submitted"
    submitted_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PendingVideo:
        data = json.loads(text)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


class Ledger:
    def __init__(self, location: str | None = None, client: S3Client | None = None) -> None:
        self.location = location or default_location()
        if self.location.startswith("s3://"):
            self._bucket, prefix = split_s3_uri(self.location)
            self._prefix = prefix.rstrip("/") + "/" if prefix else ""
            if self._prefix:
                check_key(self._prefix, self.location)
            self._client = client
            self._folder: Path | None = None
        elif "://" in self.location:
            raise InvalidRequestError(f"ledger must be a local folder or s3://bucket/prefix, got {self.location!r}")
        else:
            self._folder = Path(self.location).expanduser()

    def __repr__(self) -> str:
        return f"Ledger({self.location!r})"

    @property
    def s3(self) -> S3Client:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def add(self, record: PendingVideo) -> None:
        if self._folder is not None:
            self._folder.mkdir(parents=True, exist_ok=True)
            partial = self._folder / f".{record.video_id}.{uuid.uuid4().hex}.part"
            partial.write_text(record.to_json(), encoding="utf-8")
            os.replace(partial, self._folder / f"{record.video_id}.json")
        else:
            self.s3.put_object(
                Bucket=self._bucket,
                Key=f"{self._prefix}{record.video_id}.json",
                Body=record.to_json().encode(),
                ContentType="application/json",
            )

    def remove(self, video_id: str) -> None:
        if self._folder is not None:
            (self._folder / f"{video_id}.json").unlink(missing_ok=True)
        else:
            self.s3.delete_object(Bucket=self._bucket, Key=f"{self._prefix}{video_id}.json")

    def pending(self) -> list[PendingVideo]:
        """Every record, oldest first."""
        if self._folder is not None:
            if not self._folder.is_dir():
                return []
            records = [PendingVideo.from_json(path.read_text()) for path in self._folder.glob("*.json")]
        else:
            records = []
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
                for item in page.get("Contents", []):
                    if item["Key"].endswith(".json"):
                        body = self.s3.get_object(Bucket=self._bucket, Key=item["Key"])["Body"].read()
                        records.append(PendingVideo.from_json(body.decode()))
        return sorted(records, key=lambda record: record.submitted_at)
