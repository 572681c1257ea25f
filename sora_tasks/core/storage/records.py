"""Small JSON records by name, in a local folder or under an ``s3://`` prefix.

The ledger (videos to deliver) and the receipts (jobs already paid for) both keep one
object per record, so no write ever races another and a listing is the whole state.
A folder serves one machine; an ``s3://`` prefix serves every worker that can reach it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import InvalidRequestError
from .destinations import S3Client, check_key, s3_client, split_s3_uri

SUFFIX = ".json"


def sora_home() -> Path:
    """Where the CLI keeps its own state: ``$SORA_HOME``, default ``~/.prefect-sora``."""
    return Path(os.environ.get("SORA_HOME") or "~/.prefect-sora").expanduser()


class RecordStore:
    """``put``/``get``/``delete``/``names`` of small JSON texts under one location."""

    def __init__(self, location: str, client: S3Client | None = None, *, what: str = "records") -> None:
        self.location = location
        self._client = client
        self._folder: Path | None = None
        if location.startswith("s3://"):
            self._bucket, prefix = split_s3_uri(location)
            self._prefix = prefix.rstrip("/") + "/" if prefix else ""
            if self._prefix:
                check_key(self._prefix, location)
        elif "://" in location:
            raise InvalidRequestError(f"{what} must be a local folder or s3://bucket/prefix, got {location!r}")
        else:
            self._folder = Path(location).expanduser()

    def __repr__(self) -> str:
        return f"RecordStore({self.location!r})"

    @property
    def is_local(self) -> bool:
        return self._folder is not None

    @property
    def s3(self) -> S3Client:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def put(self, name: str, text: str) -> None:
        if self._folder is not None:
            self._folder.mkdir(parents=True, exist_ok=True)
            # Write beside then rename: a reader never sees half a record.
            partial = self._folder / f".{name}.{uuid.uuid4().hex}.part"
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, self._folder / f"{name}{SUFFIX}")
        else:
            self.s3.put_object(
                Bucket=self._bucket,
                Key=f"{self._prefix}{name}{SUFFIX}",
                Body=text.encode(),
                ContentType="application/json",
            )

    def put_new(self, name: str, text: str) -> bool:
        """Write a record only if none of that name exists; False when one does (someone else's).

        S3: a conditional put (``If-None-Match: *``); a folder: the record is written beside,
        then hard-linked into place, which fails if the name exists. Either way exactly one
        of several writers racing for a name wins, and a reader never sees half a record.
        """
        if self._folder is not None:
            self._folder.mkdir(parents=True, exist_ok=True)
            partial = self._folder / f".{name}.{uuid.uuid4().hex}.part"
            partial.write_text(text, encoding="utf-8")
            try:
                os.link(partial, self._folder / f"{name}{SUFFIX}")
            except FileExistsError:
                return False
            finally:
                partial.unlink(missing_ok=True)
            return True
        from botocore.exceptions import ClientError

        try:
            self.s3.put_object(
                Bucket=self._bucket,
                Key=f"{self._prefix}{name}{SUFFIX}",
                Body=text.encode(),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as error:
            # 412: it exists. 409: another conditional write of that name is in flight (S3 says
            # retry; whoever's lands holds it, so this writer has lost either way).
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def get(self, name: str) -> str | None:
        if self._folder is not None:
            try:
                return (self._folder / f"{name}{SUFFIX}").read_text(encoding="utf-8")
            except FileNotFoundError:
                return None  # never written, or removed meanwhile (by another sweep, say)
        from botocore.exceptions import ClientError

        try:
            body = self.s3.get_object(Bucket=self._bucket, Key=f"{self._prefix}{name}{SUFFIX}")["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return str(body.decode("utf-8"))

    def delete(self, name: str) -> None:
        if self._folder is not None:
            (self._folder / f"{name}{SUFFIX}").unlink(missing_ok=True)
        else:
            self.s3.delete_object(Bucket=self._bucket, Key=f"{self._prefix}{name}{SUFFIX}")

    def names(self) -> Iterator[str]:
        """Every record's name, page by page for S3 (no limit on how many)."""
        if self._folder is not None:
            if self._folder.is_dir():
                yield from (path.name[: -len(SUFFIX)] for path in self._folder.glob(f"*{SUFFIX}"))
            return
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(self._prefix) :]
                if key.endswith(SUFFIX) and "/" not in key:
                    yield key[: -len(SUFFIX)]
