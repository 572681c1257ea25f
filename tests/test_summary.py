"""Artifact keys, asset keys and the batch summary's totals: the rules, without a server."""

from __future__ import annotations

import pytest
from prefect.assets import Asset
from prefect.client.schemas.actions import ArtifactCreate

from sora_tasks.core.errors import InvalidRequestError
from sora_tasks.core.storage.destinations import (
    MAX_PRESIGN_SECONDS,
    check_presign_seconds,
    presign,
    variant_output,
)
from sora_tasks.core.summary import artifact_key, batch_markdown, batch_totals, slug, table_rows
from sora_tasks.tasks import asset_key


@pytest.mark.parametrize(
    ("given", "names", "key"),
    [
        (None, ("generate-video", None), "generate-video"),
        (None, ("generate-videos", "nightly-batch"), "generate-videos-nightly-batch"),
        (None, ("generate-video", "Ad Hoc (EU)"), "generate-video-ad-hoc-eu"),
        ("Launch Videos, 2026!", ("generate-video", "adhoc"), "launch-videos-2026"),
    ],
)
def test_artifact_keys_follow_prefects_rule(given: str | None, names: tuple[str | None, ...], key: str) -> None:
    assert artifact_key(given, *names) == key
    ArtifactCreate(key=key)  # Prefect's own validation: lowercase letters, numbers, dashes


def test_a_key_with_nothing_usable_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="no letter or digit"):
        artifact_key("___", "generate-video")
    assert slug("Ünïcode ✓") == "n-code"


@pytest.mark.parametrize(
    ("uri", "key"),
    [
        ("s3://bucket/videos/2026-11-29/video_1.mp4", "s3://bucket/videos/2026-11-29/video_1.mp4"),
        ("/data/out/video_1.thumbnail.webp", "file:///data/out/video_1.thumbnail.webp"),
        ("/data/my videos/#1 100%.mp4", "file:///data/my_videos/_1_100_.mp4"),
        ("s3://bucket/a?b&c[1].mp4", "s3://bucket/a_b_c_1_.mp4"),
    ],
)
def test_asset_keys_are_the_objects_uri_made_valid(uri: str, key: str) -> None:
    assert asset_key(uri) == key
    assert Asset(key=asset_key(uri)).key == key  # Prefect accepts it


def test_a_long_asset_key_is_cut_to_prefects_limit_and_stays_unique() -> None:
    long = "s3://bucket/" + "a" * 600 + ".mp4"
    other = "s3://bucket/" + "a" * 600 + ".jpg"
    assert len(asset_key(long)) == 512 and asset_key(long) != asset_key(other)
    Asset(key=asset_key(long))


def test_previews_go_beside_the_video_and_urls_last_at_most_seven_days() -> None:
    assert variant_output("s3://b/x/{video_id}.mp4", "thumbnail", "image/webp") == "s3://b/x/{video_id}.thumbnail.webp"
    assert variant_output("out/clip.mp4", "spritesheet", "image/jpeg; q=1") == "out/clip.spritesheet.jpg"
    assert variant_output("out/", "thumbnail", "image/png") == "out/{video_id}.thumbnail.png"
    assert check_presign_seconds(MAX_PRESIGN_SECONDS) == 604800
    with pytest.raises(InvalidRequestError, match="between 1 and 604800"):
        check_presign_seconds(0)
    assert presign("/local/clip.thumbnail.webp", 60) == "/local/clip.thumbnail.webp"


def test_batch_totals_and_summary() -> None:
    rows = [
        {"row": 1, "status": "delivered", "how": "created", "duration": 4, "cost_usd": 0.4, "video_id": "video_a",
         "uri": "s3://b/a.mp4", "thumbnail_uri": "s3://b/a.thumbnail.webp", "model": "sora-2"},
        {"row": 2, "status": "delivered", "how": "already delivered", "duration": 8, "cost_usd": 0.0,
         "video_id": "video_b", "uri": "s3://b/b.mp4", "model": "sora-2"},
        {"row": 3, "status": "failed", "code": "moderation_blocked", "duration": 12, "cost_usd": 1.2,
         "video_id": "video_c", "error": "ModerationBlockedError: blocked | twice", "model": "sora-2"},
        {"row": 4, "status": "invalid", "code": "invalid_row", "error": "resolution '1920x1080' is not supported"},
    ]  # fmt: skip
    assert batch_totals(rows) == {
        "rows": 4,
        "delivered": 2,
        "already_delivered": 1,
        "failed": 1,
        "invalid": 1,
        "paid_seconds": 16,  # row 1 made now, row 3 paid for and failed; row 2 was an earlier run's
        "cost_usd": 1.6,
    }
    text = batch_markdown(rows, manifest="s3://b/m.jsonl", presign=lambda uri: f"https://signed/{uri[5:]}", limit=3)
    assert "| 1 | ![row 1](https://signed/b/a.thumbnail.webp) | [video_a](https://signed/b/a.mp4) | delivered |" in text
    # Values are escaped (core.text): '(' and '-' too, which render as themselves.
    assert "| 2 |  | [video_b](https://signed/b/b.mp4) | delivered \\(already delivered\\) |" in text
    assert "| 3 |  | `video_c` | failed | moderation_blocked | 12 s, sora\\-2, $1.20 |" in text
    assert "*1 more rows.*" in text and "| 4 |" not in text
    assert "- row 3: ModerationBlockedError: blocked \\| twice" in text  # a pipe cannot break the table
    assert list(table_rows(rows)[3])[:5] == ["row", "status", "code", "video_id", "uri"]
