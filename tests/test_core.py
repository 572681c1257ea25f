"""Core pieces on their own: storage, destinations, the deprecation notice."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sora_tasks.core import resolve_destination, store_file
from sora_tasks.core.storage.destinations import object_metadata


def test_multipart_upload_for_large_files_is_verified(s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    destination = resolve_destination(f"s3://{bucket}/large/{{video_id}}.mp4", video_id="video_big", model="sora-2")
    stored = store_file(
        big,
        destination,
        sha256=digest,
        metadata=object_metadata("video_big", "sora-2", "4", "1280x720", "p", digest),
        multipart_threshold=5 * 1024 * 1024,
    )
    head = s3.head_object(Bucket=bucket, Key="large/video_big.mp4")
    assert head["ETag"].strip('"').endswith("-3")  # uploaded in three parts
    assert head["ContentType"] == "video/mp4" and head["Metadata"]["sha256"] == digest
    body = s3.get_object(Bucket=bucket, Key="large/video_big.mp4")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest == stored.sha256


def test_destinations_expand_templates_and_refuse_escapes(tmp_path: Path) -> None:
    resolved = resolve_destination("s3://b-1/{model}/{date}/{video_id}.mp4", video_id="video_1", model="sora-2-pro")
    assert resolved.bucket == "b-1" and resolved.key is not None
    assert resolved.key.startswith("sora-2-pro/20") and resolved.key.endswith("/video_1.mp4")
    assert resolve_destination("s3://b-1/folder/", video_id="v", model="m").key == "folder/v.mp4"
    assert resolve_destination(str(tmp_path), video_id="v", model="m").path == tmp_path / "v.mp4"
    assert resolve_destination("s3://b-1/", video_id="v", model="m").key == "v.mp4"
    for bad in ("s3://b-1//etc/x", "s3://b-1/a/../b", "s3://b-1", "s3://B_1/x", "gs://b/x", "s3://b-1/{nope}"):
        with pytest.raises(ValueError):
            resolve_destination(bad, video_id="v", model="m")
    with pytest.raises(ValueError, match=r"video_id '\.\./\.\./x' cannot name a file"):
        resolve_destination("s3://b-1/{video_id}", video_id="../../x", model="m")
    # LiteLLM's base64 ids hold '/': one file name, never a folder.
    assert resolve_destination("s3://b-1/{video_id}.mp4", video_id="video_ab/c+=", model="m").key == "video_ab_c+=.mp4"


def test_deprecation_warning_is_silenced_and_noted_once(emulator) -> None:  # type: ignore[no-untyped-def]
    script = f"""
import logging
logging.basicConfig(level=logging.WARNING)
from sora_tasks.core import VideoRequest, VideosClient
client = VideosClient(api_key="k", base_url="{emulator.base_url}")
video = client.create(VideoRequest.build("warned once"))
for _ in range(3):
    client.retrieve(video.id)
VideosClient(api_key="k", base_url="https://api.openai.com/v1")
VideosClient(api_key="k", base_url="https://api.openai.com/v1")
"""
    done = subprocess.run([sys.executable, "-W", "always", "-c", script], capture_output=True, text=True, check=True)
    assert "DeprecationWarning" not in done.stderr
    assert done.stderr.count("shut down on 2026-09-24") == 1


def test_every_error_survives_pickling_with_its_video_id() -> None:
    import pickle

    from sora_tasks.core import errors

    samples = [
        errors.ServerRejectedError("bad", status_code=400, param="size"),
        errors.TransientError("later", video_id="video_1", retry_after=2.0, status_code=503),
        errors.VideoJobError("video_2", "internal_error", "boom"),
        errors.ModerationBlockedError("video_3", "moderation_blocked", "no"),
        errors.VideoTimeoutError("video_4", 12.0, "in_progress", 40),
        errors.VideoNotReadyError("video_5", "queued"),
        errors.VideoExpiredError("video_6", "expired", "gone"),
        errors.DownloadError("video_7", "cut"),
        errors.VariantUnavailableError("video_8", "thumbnail", "no thumbnails"),
        errors.StorageError("upload failed", video_id="video_9", local_path="/tmp/x.mp4"),
        errors.BatchFailedError([{"row": 1, "status": "failed", "video_id": "video_10", "error": "E: x"}]),
    ]
    for error in samples:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy) == vars(error)
