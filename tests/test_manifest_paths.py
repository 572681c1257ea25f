"""A manifest row stays inside what the run was given: outputs under output_prefix, images beside the manifest.

Each case loads a real manifest file (local, or on the moto S3 server) with ``load_manifest``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from sora_tasks.core.api.settings import ApiSettings
from sora_tasks.core.errors import InvalidRequestError
from sora_tasks.core.jobs.manifest import InvalidRow, ManifestRow, load_manifest

SETTINGS = ApiSettings(provider="openai")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def put_jsonl(s3: Any, bucket: str, key: str, rows: list[dict[str, Any]]) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body="\n".join(json.dumps(row) for row in rows).encode())
    return f"s3://{bucket}/{key}"


def load(source: str, **options: Any) -> tuple[list[ManifestRow], list[InvalidRow]]:
    return load_manifest(source, settings=SETTINGS, **options)


def refused(invalid: list[InvalidRow]) -> dict[int, str]:
    return {row.number: row.error for row in invalid}


def test_dot_segments_in_output_are_refused_and_the_other_rows_stay_valid(tmp_path: Path) -> None:
    manifest = write_jsonl(
        tmp_path / "batch.jsonl",
        [
            {"prompt": "one"},
            {"prompt": "two", "output": "../../escape.mp4"},
            {"prompt": "three", "output": "clips/../../{video_id}.mp4"},
            {"prompt": "four", "output": "clips/{video_id}.mp4"},
            {"prompt": "five", "output": ".."},
        ],
    )
    valid, invalid = load(manifest, output_prefix="videos/batch")
    assert [row.number for row in valid] == [1, 4]
    assert [row.output for row in valid] == ["videos/batch/{video_id}.mp4", "videos/batch/clips/{video_id}.mp4"]
    assert refused(invalid) == {
        2: "output '../../escape.mp4' leaves output_prefix 'videos/batch' ('..' segments are not allowed)",
        3: "output 'clips/../../{video_id}.mp4' leaves output_prefix 'videos/batch' ('..' segments are not allowed)",
        5: "output '..' leaves output_prefix 'videos/batch' ('..' segments are not allowed)",
    }
    assert invalid[0].fields == {"prompt": "two", "output": "../../escape.mp4"}

    # The opt-out: rows write where they say, as before.
    valid, invalid = load(manifest, output_prefix="videos/batch", allow_outside_prefix=True)
    assert invalid == [] and [row.number for row in valid] == [1, 2, 3, 4, 5]
    assert valid[1].output == "videos/batch/../../escape.mp4"


def test_absolute_local_outputs_must_lie_under_the_prefix(tmp_path: Path) -> None:
    prefix = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    prefix.mkdir()
    (prefix / "archive").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    rows = [
        {"prompt": "inside", "output": f"{prefix}/day/{{video_id}}.mp4"},
        {"prompt": "root", "output": "/etc/cron.d/{video_id}.mp4"},
        {"prompt": "home", "output": "~/videos/{video_id}.mp4"},
        {"prompt": "sibling", "output": f"{tmp_path}/out-other/{{video_id}}.mp4"},
        {"prompt": "the folder", "output": f"{prefix}/"},
        {"prompt": "the folder as a file", "output": str(prefix)},
        {"prompt": "drive", "output": "C:\\videos\\x.mp4"},
        {"prompt": "s3", "output": "s3://other-bucket/x.mp4"},
        # A symlink under the prefix would take the file wherever it points: refused (issue 22),
        # however the row names it. The prefix itself may be a link (tmp_path often is).
        {"prompt": "through a link", "output": f"{prefix}/archive/{{video_id}}.mp4"},
        {"prompt": "relative", "output": "archive/{video_id}.mp4"},
    ]
    manifest = write_jsonl(tmp_path / "in" / "batch.jsonl", rows)
    valid, invalid = load(manifest, output_prefix=str(prefix))
    assert [row.number for row in valid] == [1, 5]
    assert [row.output for row in valid] == [f"{prefix}/day/{{video_id}}.mp4", f"{prefix}/"]
    errors = refused(invalid)
    assert sorted(errors) == [2, 3, 4, 6, 7, 8, 9, 10]
    link = str(prefix.resolve() / "archive")
    for number in (9, 10):
        assert errors.pop(number) == (
            f"output {f'{prefix}/archive/{{video_id}}.mp4'!r} goes through the symlink {link!r} inside "
            f"output_prefix {str(prefix)!r}; name the real folder (rows may not write through links)"
        )
    for number, error in errors.items():
        assert error.startswith(f"output {rows[number - 1]['output']!r} leaves output_prefix {str(prefix)!r} ("), error
    assert errors[2].endswith(f"(an absolute path must lie under {str(prefix)!r})")
    assert errors[7].endswith("(a Windows path is never inside a folder here)")
    assert errors[8].endswith("(an s3:// output when the prefix is a local folder)")

    valid, invalid = load(manifest, output_prefix=str(prefix), allow_outside_prefix=True)
    assert invalid == [] and len(valid) == len(rows)
    assert valid[1].output == "/etc/cron.d/{video_id}.mp4" and valid[7].output == "s3://other-bucket/x.mp4"


def test_s3_outputs_must_be_in_the_prefix_bucket_and_key(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    rows = [
        {"prompt": "default"},
        {"prompt": "other bucket", "output": "s3://other-bucket/batch/x.mp4"},
        {"prompt": "same bucket elsewhere", "output": f"s3://{bucket}/private/x.mp4"},
        {"prompt": "prefix as a string prefix", "output": f"s3://{bucket}/batchx/{{video_id}}.mp4"},
        {"prompt": "inside", "output": f"s3://{bucket}/batch/day/{{video_id}}.mp4"},
        {"prompt": "local", "output": "/tmp/x.mp4"},
        {"prompt": "dots", "output": "day/../../../x.mp4"},
        {"prompt": "relative", "output": "day/{video_id}.mp4"},
    ]
    manifest = put_jsonl(s3, bucket, "manifests/today.jsonl", rows)
    prefix = f"s3://{bucket}/batch"
    valid, invalid = load(manifest, output_prefix=prefix, client=s3)
    assert [(row.number, row.output) for row in valid] == [
        (1, f"{prefix}/{{video_id}}.mp4"),
        (5, f"s3://{bucket}/batch/day/{{video_id}}.mp4"),
        (8, f"{prefix}/day/{{video_id}}.mp4"),
    ]
    errors = refused(invalid)
    assert errors == {
        2: f"output 's3://other-bucket/batch/x.mp4' leaves output_prefix {prefix!r} "
        f"(an s3:// output must be under s3://{bucket}/batch/)",
        3: f"output 's3://{bucket}/private/x.mp4' leaves output_prefix {prefix!r} "
        f"(an s3:// output must be under s3://{bucket}/batch/)",
        4: f"output 's3://{bucket}/batchx/{{video_id}}.mp4' leaves output_prefix {prefix!r} "
        f"(an s3:// output must be under s3://{bucket}/batch/)",
        6: f"output '/tmp/x.mp4' leaves output_prefix {prefix!r} (a local path when the prefix is on S3)",
        7: f"output 'day/../../../x.mp4' leaves output_prefix {prefix!r} ('..' segments are not allowed)",
    }

    valid, invalid = load(manifest, output_prefix=prefix, client=s3, allow_outside_prefix=True)
    # Outside the prefix is allowed; S3 itself still refuses '..' keys, as it always did.
    assert [row.number for row in invalid] == [7] and "'.' or '..' segments" in invalid[0].error
    assert [row.output for row in valid][1:3] == ["s3://other-bucket/batch/x.mp4", f"s3://{bucket}/private/x.mp4"]

    # A prefix naming the whole bucket admits any key in it, and no other bucket.
    valid, invalid = load(manifest, output_prefix=f"s3://{bucket}", client=s3)
    assert [row.number for row in invalid] == [2, 6, 7]


def test_local_images_come_from_the_manifest_folder_or_image_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = tmp_path / "team"
    (team / "pics").mkdir(parents=True)
    (team / "pics" / "a.png").write_bytes(b"png")
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.png").write_bytes(b"secret")
    (team / "pics" / "link.png").symlink_to(private / "secret.png")
    (team / "pics" / "inner-link.png").symlink_to(team / "pics" / "a.png")
    rows = [
        {"prompt": "relative", "image": "pics/a.png"},
        {"prompt": "absolute inside", "image": str(team / "pics" / "a.png")},
        {"prompt": "absolute outside", "image": str(private / "secret.png")},
        {"prompt": "dots outside", "image": "../private/secret.png"},
        {"prompt": "symlink out", "image": "pics/link.png"},
        {"prompt": "symlink in", "image": "pics/inner-link.png"},
        {"prompt": "system", "image": "/etc/hostname"},
        {"prompt": "missing", "image": "pics/missing.png"},
        {"prompt": "no image"},
    ]
    manifest = write_jsonl(team / "batch.jsonl", rows)
    # Relative images are relative to the manifest's folder, not the current directory.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "pics").mkdir(parents=True)
    (elsewhere / "pics" / "a.png").write_bytes(b"decoy")
    monkeypatch.chdir(elsewhere)

    valid, invalid = load(manifest)
    photo = str((team / "pics" / "a.png").resolve())
    assert [(row.number, row.image) for row in valid] == [(1, photo), (2, photo), (6, photo), (9, None)]
    errors = refused(invalid)
    assert sorted(errors) == [3, 4, 5, 7, 8]
    folder = str(team.resolve())
    secret = str((private / "secret.png").resolve())
    assert errors[3] == (
        f"image {str(private / 'secret.png')!r} is outside the manifest's folder {folder!r} and image_roots []"
    )
    assert errors[4] == (
        f"image '../private/secret.png' is outside the manifest's folder {folder!r} and image_roots [] "
        f"(it resolves to {secret!r})"
    )
    assert errors[5] == (
        f"image 'pics/link.png' is outside the manifest's folder {folder!r} and image_roots [] "
        f"(it resolves to {secret!r})"
    )
    assert errors[7].startswith("image '/etc/hostname' is outside the manifest's folder")
    assert errors[8].startswith("image: no such file: pics/missing.png")

    # The opt-out: a folder in image_roots admits its files, however the row names them.
    valid, invalid = load(manifest, image_roots=[str(private)])
    assert [row.number for row in invalid] == [7, 8]
    assert [row.image for row in valid if row.number in (3, 4, 5)] == [secret, secret, secret]


def test_images_beside_an_s3_manifest_or_under_s3_image_roots(s3, bucket: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = f"other-{uuid.uuid4().hex[:8]}"
    (tmp_path / "local.png").write_bytes(b"png")
    rows = [
        {"prompt": "beside", "image": f"s3://{bucket}/team/in/pics/a.png"},
        {"prompt": "sibling folder", "image": f"s3://{bucket}/team/shared/a.png"},
        {"prompt": "other bucket", "image": f"s3://{other}/team/in/a.png"},
        {"prompt": "dots", "image": f"s3://{bucket}/team/in/../secret.png"},
        {"prompt": "local", "image": str(tmp_path / "local.png")},
        {"prompt": "folder as a string prefix", "image": f"s3://{bucket}/team/inbox/a.png"},
    ]
    manifest = put_jsonl(s3, bucket, "team/in/today.jsonl", rows)
    valid, invalid = load(manifest, output_prefix=f"s3://{bucket}/out", client=s3)
    assert [(row.number, row.image) for row in valid] == [(1, f"s3://{bucket}/team/in/pics/a.png")]
    errors = refused(invalid)
    folder = f"s3://{bucket}/team/in/"
    assert (
        errors[2]
        == f"image 's3://{bucket}/team/shared/a.png' is outside the manifest's folder {folder!r} and image_roots []"
    )
    assert (
        errors[3]
        == f"image 's3://{other}/team/in/a.png' is outside the manifest's folder {folder!r} and image_roots []"
    )
    assert errors[4].startswith(f"image 's3://{bucket}/team/in/../secret.png': S3 key must not contain '.' or '..'")
    assert errors[5].startswith(f"image {str(tmp_path / 'local.png')!r} is outside the manifest's folder {folder!r}")
    assert errors[6].startswith(f"image 's3://{bucket}/team/inbox/a.png' is outside")

    roots = [f"s3://{bucket}/team/shared/", f"s3://{other}", str(tmp_path)]
    valid, invalid = load(manifest, output_prefix=f"s3://{bucket}/out", client=s3, image_roots=roots)
    assert [row.number for row in invalid] == [4, 6]
    assert [row.image for row in valid] == [
        f"s3://{bucket}/team/in/pics/a.png",
        f"s3://{bucket}/team/shared/a.png",
        f"s3://{other}/team/in/a.png",
        str((tmp_path / "local.png").resolve()),
    ]

    # A local manifest's s3:// images need an s3:// root too.
    local = write_jsonl(
        tmp_path / "batch.jsonl", [{"prompt": "s3 image", "image": f"s3://{bucket}/team/in/pics/a.png"}]
    )
    assert refused(load(local)[1]) == {
        1: f"image 's3://{bucket}/team/in/pics/a.png' is outside the manifest's folder "
        f"{str(tmp_path.resolve())!r} and image_roots []"
    }
    assert load(local, image_roots=[f"s3://{bucket}/team"])[1] == []


def test_csv_rows_are_checked_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"png")
    manifest = tmp_path / "batch.csv"
    manifest.write_text("prompt,image,output\nfine,a.png,{video_id}.mp4\nescape,,../x.mp4\nsteal,/etc/hostname,\n")
    valid, invalid = load(str(manifest), output_prefix="videos")
    assert [(row.number, row.image) for row in valid] == [(1, str((tmp_path / "a.png").resolve()))]
    assert [(row.number, row.error.split()[0]) for row in invalid] == [(2, "output"), (3, "image")]


def test_bad_image_roots_fail_the_whole_load(tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "batch.jsonl", [{"prompt": "one"}])
    with pytest.raises(InvalidRequestError, match="image_roots must be a list"):
        load(manifest, image_roots=str(tmp_path))
    with pytest.raises(InvalidRequestError, match="image_roots: an empty entry"):
        load(manifest, image_roots=[""])
    with pytest.raises(InvalidRequestError, match="not valid"):
        load(manifest, image_roots=["s3://Not_A_Bucket/x"])
    with pytest.raises(InvalidRequestError, match=r"'\.\.' segments"):
        load(manifest, image_roots=["s3://fine-bucket/a/../b"])
