"""Receipts: which job was paid for which request, so a rerun resumes instead of paying again.

A receipt is written the moment a create answers, keyed by the request's fingerprint
(prompt, model, duration, resolution, image digest, extra fields, request id) and the
server. A later run of the same request finds it and follows that job; a job the
server no longer has (expired, deleted, server reset) is created anew and said so.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field

from .records import RecordStore, sora_home
from .storage import S3Client


def default_location() -> str:
    """``$SORA_RECEIPTS``, else ``receipts`` under ``$SORA_HOME`` (default ``~/.prefect-sora``)."""
    return os.environ.get("SORA_RECEIPTS") or str(sora_home() / "receipts")


def receipt_key(base_url: str, fingerprint: str) -> str:
    """One name per (server, request): the same request on another server is another job."""
    return hashlib.sha256(f"{base_url.rstrip('/')}\n{fingerprint}".encode()).hexdigest()


@dataclass(frozen=True)
class Receipt:
    key: str
    video_id: str
    base_url: str
    model: str
    duration: str
    resolution: str
    created_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Receipt:
        data = json.loads(text)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


class Receipts:
    def __init__(self, location: str | None = None, client: S3Client | None = None) -> None:
        self.location = location or default_location()
        self._store = RecordStore(self.location, client, what="receipts")

    def __repr__(self) -> str:
        return f"Receipts({self.location!r})"

    def find(self, key: str) -> Receipt | None:
        text = self._store.get(key)
        return Receipt.from_json(text) if text is not None else None

    def record(self, receipt: Receipt) -> None:
        self._store.put(receipt.key, receipt.to_json())

    def forget(self, key: str) -> None:
        self._store.delete(key)
