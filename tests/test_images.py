"""Reference-image preprocessing on awkward real-world inputs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from sora_tasks.core import InvalidRequestError, prepare_image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def halves(width: int, height: int, top: tuple[int, ...], bottom: tuple[int, ...], mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, (width, height), bottom)
    image.paste(Image.new(mode, (width, height // 2), top), (0, 0))
    return image


def test_exif_rotated_photo_is_turned_upright_before_fitting() -> None:
    # Stored landscape (red left, blue right); EXIF 6 means "rotate 90° clockwise to view".
    stored = Image.new("RGB", (1600, 900), (0, 0, 255))
    stored.paste(Image.new("RGB", (800, 900), (255, 0, 0)), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    prepared = prepare_image(encode(stored, "JPEG", exif=exif), "720x1280")
    image = decoded(prepared.data)
    assert image.size == (720, 1280) and prepared.mime_type == "image/jpeg"
    top, bottom = image.getpixel((360, 100)), image.getpixel((360, 1180))
    assert top[0] > 200 and top[2] < 60, top  # red is on top once upright
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_cmyk_jpeg_becomes_rgb_with_the_right_colours() -> None:
    cmyk = Image.new("CMYK", (1280, 720), (0, 255, 255, 0))  # pure red in CMYK
    prepared = prepare_image(encode(cmyk, "JPEG"), "1280x720")
    image = decoded(prepared.data)
    assert image.mode == "RGB" and not prepared.unchanged
    red, green, blue = image.getpixel((640, 360))
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_flattened_onto_the_background(mode: str) -> None:
    source = Image.new("RGBA", (640, 360), (0, 0, 0, 0))
    source.paste(Image.new("RGBA", (320, 360), (0, 0, 0, 255)), (0, 0))
    if mode == "LA":
        source = source.convert("LA")
    elif mode == "P":
        source = source.convert("P")
        source.info["transparency"] = source.getpixel((600, 10))
    prepared = prepare_image(encode(source, "PNG"), "1280x720", fit="stretch")
    image = decoded(prepared.data)
    assert image.mode == "RGB" and image.size == (1280, 720)
    assert image.getpixel((100, 360)) == (0, 0, 0)  # opaque black stays black
    assert image.getpixel((1200, 360)) == (255, 255, 255)  # transparent becomes the white background


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    source = Image.new("I;16", (1280, 720), 32768)  # mid grey in 16 bits
    prepared = prepare_image(encode(source, "PNG"), "1280x720")
    value = decoded(prepared.data).getpixel((10, 10))
    assert all(120 <= channel <= 135 for channel in value), value


def test_cover_crops_the_centre() -> None:
    # 2:1 source with a red centre and green sides; cover to 16:9 keeps the centre.
    source = Image.new("RGB", (2000, 1000), (0, 255, 0))
    source.paste(Image.new("RGB", (1000, 1000), (255, 0, 0)), (500, 0))
    image = decoded(prepare_image(encode(source, "PNG"), "720x1280", fit="cover").data)
    assert image.size == (720, 1280)
    assert image.getpixel((5, 640))[0] > 200 and image.getpixel((715, 640))[0] > 200  # edges are red: centre kept


def test_contain_pads_and_stretch_distorts() -> None:
    source = halves(1000, 1000, (255, 0, 0), (0, 0, 255))
    contained = decoded(prepare_image(encode(source, "PNG"), "1280x720", fit="contain").data)
    assert contained.getpixel((10, 360)) == (255, 255, 255)  # side padding
    assert contained.getpixel((640, 10))[0] > 200  # the whole square is visible: red top
    stretched = decoded(prepare_image(encode(source, "PNG"), "1280x720", fit="stretch").data)
    assert stretched.getpixel((10, 10))[0] > 200 and stretched.getpixel((10, 710))[2] > 200


def test_huge_jpeg_is_decoded_in_draft_mode_and_fitted() -> None:
    huge = halves(6000, 4000, (255, 0, 0), (0, 0, 255))  # 24 MP
    prepared = prepare_image(encode(huge, "JPEG", quality=90), "1280x720")
    image = decoded(prepared.data)
    assert image.size == (1280, 720)
    assert image.getpixel((640, 20))[0] > 200 and image.getpixel((640, 700))[2] > 200


def test_matching_image_goes_through_byte_for_byte() -> None:
    data = encode(Image.new("RGB", (1280, 720), (1, 2, 3)), "WEBP")
    prepared = prepare_image(data, "1280x720")
    assert prepared.unchanged and prepared.data == data
    assert (prepared.mime_type, prepared.filename) == ("image/webp", "reference.webp")


def test_output_format_and_sources(tmp_path: Path) -> None:
    source = Image.new("RGB", (800, 600), (9, 9, 9))
    path = tmp_path / "in.png"
    source.save(path)
    from_path = prepare_image(str(path), "1280x720", output_format="JPEG")
    assert from_path.mime_type == "image/jpeg" and decoded(from_path.data).format == "JPEG"
    assert prepare_image(path.open("rb"), "1280x720").mime_type == "image/png"
    assert prepare_image(source, "1280x720").mime_type == "image/png"
    assert prepare_image(path.read_bytes(), "1280x720", output_format="WEBP").filename == "reference.webp"


def test_s3_uri_source(s3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket=bucket, Key="refs/a.png", Body=encode(Image.new("RGB", (1280, 720)), "PNG"))
    assert prepare_image(f"s3://{bucket}/refs/a.png", "1280x720").unchanged
    with pytest.raises(InvalidRequestError, match="NoSuchKey"):
        prepare_image(f"s3://{bucket}/refs/missing.png", "1280x720")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/nonexistent/photo.jpg", "no such file"),
        (b"", "empty"),
        (b"this is not an image at all", "not a readable"),
        (_png_header_only(50_000, 50_000), "out of range|decompression bomb"),  # 2.5 GP: a decompression bomb
        (_png_header_only(100_000, 1), "out of range"),
        (encode(Image.new("RGB", (1280, 720), (5, 5, 5)), "JPEG")[:400], "not a readable|could not be decoded"),
        ("s3://Bad_Bucket/x.png", "bucket name"),
        (12345, "must be a path"),
    ],
)
def test_bad_images_raise_value_error_naming_the_problem(source: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prepare_image(source, "1280x720")  # type: ignore[arg-type]


def test_unreadable_file(tmp_path: Path) -> None:
    directory = tmp_path / "dir.png"
    directory.mkdir()
    with pytest.raises(ValueError, match="no such file"):
        prepare_image(directory, "1280x720")


def test_bad_fit_is_rejected() -> None:
    with pytest.raises(ValueError, match="fit must be one of cover, contain, stretch"):
        prepare_image(b"x", "1280x720", fit="zoom")  # type: ignore[arg-type]


def _awkward_inputs() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 8
    rotated = encode(Image.new("RGB", (900, 1600), (10, 200, 10)), "JPEG", exif=exif)
    cmyk = encode(Image.new("CMYK", (1500, 1000), (200, 0, 0, 0)), "JPEG")
    rgba = encode(Image.new("RGBA", (640, 640), (0, 0, 255, 128)), "PNG")
    huge = encode(halves(6000, 4000, (255, 0, 0), (0, 0, 255)), "JPEG", quality=85)
    return {"exif-rotated": rotated, "cmyk": cmyk, "rgba": rgba, "huge": huge}


AWKWARD = _awkward_inputs()


@pytest.mark.parametrize("fit", ["cover", "contain", "stretch"])
@pytest.mark.parametrize("kind", sorted(AWKWARD))
@pytest.mark.parametrize("size", ["1280x720", "720x1280", "1792x1024"])
def test_every_fit_gives_the_exact_size_on_awkward_inputs(fit: str, kind: str, size: str) -> None:
    prepared = prepare_image(AWKWARD[kind], size, fit=fit)  # type: ignore[arg-type]
    image = decoded(prepared.data)
    assert f"{image.width}x{image.height}" == size and image.mode == "RGB"
    assert prepared.mime_type == {"PNG": "image/png", "JPEG": "image/jpeg"}[image.format]
    assert (prepared.width, prepared.height) == image.size
