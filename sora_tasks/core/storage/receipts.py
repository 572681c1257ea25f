"""Receipts: which job was paid for which request, and where it was delivered.

A receipt is written the moment a create answers, keyed by the request's fingerprint
(prompt, model, duration, resolution, image digest, extra fields, request id) and the
server, and completed once the video is stored (or marked rejected, with where the
rejected file is kept, when it failed the quality check). A later run of the same request, on any
machine that sees the same store, finds it: a delivered video is not made again, a job
still rendering is followed, and a job the server no longer has (expired, deleted,
server reset) is created anew and said so. Nothing here depends on a cache or a clock.

Where receipts live: an explicit location, else ``$SORA_RECEIPTS``, else beside the
outputs when they are in S3 (``s3://BUCKET/.prefect-sora/receipts``, seen by every
worker), else ``$SORA_HOME/receipts`` on this machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field

from ..ids import is_safe_id
from ..text import shown
from .claims import Claims
from .destinations import S3Client
from .records import RecordStore, sora_home

logger = logging.getLogger("sora_tasks")

STATE_FOLDER = ".prefect-sora/receipts"


def default_location(output: str | None = None) -> str:
    """Where receipts go for videos delivered to ``output`` (see the module docstring)."""
    if os.environ.get("SORA_RECEIPTS"):
        return os.environ["SORA_RECEIPTS"]
    if output and output.startswith("s3://"):
        bucket = output[len("s3://") :].split("/", 1)[0]
        if bucket and "{" not in bucket:
            return f"s3://{bucket}/{STATE_FOLDER}"
    return str(sora_home() / "receipts")


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
    # Filled in once the video is stored.
    delivered_uri: str | None = None
    delivered_bytes: int | None = None
    delivered_sha256: str | None = None
    expires_at: int | None = None
    # The previews stored beside the video, if any.
    thumbnail_uri: str | None = None
    spritesheet_uri: str | None = None
    # Filled in when the video failed the quality check: where it is kept, and the
    # failed checks' codes (quality_black, ...). A rerun follows the same job and checks
    # it again (no new payment); a quality retry is a receipt of its own.
    rejected_uri: str | None = None
    rejected_codes: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Receipt:
        data = json.loads(text)
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


class Receipts:
    """Receipts at one location (a folder or an ``s3://`` prefix)."""

    def __init__(self, location: str | None = None, client: S3Client | None = None) -> None:
        self.location = location or default_location()
        self.is_local = not self.location.startswith("s3://")
        self._store = RecordStore(self.location, client, what="receipts")
        self._client = client
        self._claims: Claims | None = None

    def __repr__(self) -> str:
        return f"Receipts({self.location!r})"

    def find(self, key: str) -> Receipt | None:
        """The receipt under ``key``; None when there is none, or when it cannot be trusted.

        A receipt is data another machine wrote: one that does not parse, is filed under
        another key, or names a video id that breaks the id rule is ignored (with a warning),
        never followed; its request is then made as if it had none.
        """
        text = self._store.get(key)
        if text is None:
            return None
        try:
            receipt = Receipt.from_json(text)
        except (ValueError, TypeError) as error:
            logger.warning("receipt %s in %s is unreadable, ignored: %s", key, self.location, shown(str(error)))
            return None
        if receipt.key != key or not is_safe_id(receipt.video_id):
            logger.warning(
                "receipt %s in %s names %s under key %s: ignored",
                key,
                self.location,
                shown(receipt.video_id),
                shown(receipt.key),
            )
            return None
        return receipt

    @property
    def claims(self) -> Claims:
        """The claims beside these receipts (see :mod:`.claims`): who may pay for a request."""
        if self._claims is None:
            self._claims = Claims(self.location, self._client)
        return self._claims

    def record(self, receipt: Receipt) -> None:
        self._store.put(receipt.key, receipt.to_json())

    def forget(self, key: str) -> None:
        self._store.delete(key)
