"""Turn any reasonable image into a reference the Videos API accepts.

The API wants ``input_reference`` at exactly the requested size, as JPEG, PNG or
WebP. Photos arrive rotated by EXIF, in CMYK or 16-bit, with alpha, or at 24 MP;
this module fixes all of that with Pillow's own tools (``ImageOps``, ``draft``).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidRequestError
from ..text import shorten
from .fit import FITS, Fit

__all__ = ["FITS", "Fit", "PreparedImage", "prepare_image"]

OutputFormat = Literal["PNG", "JPEG", "WEBP"]
ImageSource = str | Path | bytes | bytearray | IO[bytes] | Image.Image

FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
}
# Above this many pixels an input is refused: a 200 MP reference is a mistake or an attack.
MAX_PIXELS = 200_000_000
MAX_SIDE = 30_000
# Above this many bytes an input is refused unread: a 24 MP JPEG is about 10 MB, and a
# PNG's metadata chunks are read whole into memory (a 50 MB eXIf chunk cost 242 MB).
MAX_IMAGE_BYTES = 50 * 1024 * 1024
_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


@dataclass(frozen=True)
class PreparedImage:
    """An ``input_reference`` ready to send: bytes plus the MIME type and filename they need."""

    data: bytes
    mime_type: str
    filename: str
    width: int
    height: int
    unchanged: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def as_upload(self) -> tuple[str, bytes, str]:
        """The (filename, content, mime) tuple the OpenAI SDK sends as a multipart file."""
        return (self.filename, self.data, self.mime_type)


def read_source_bytes(source: str | Path | bytes | bytearray | IO[bytes], limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The image's bytes, never more than ``limit`` of them read (a larger input is refused, naming the limit)."""
    too_large = f"is larger than the limit of {limit:,} bytes (max_bytes)"
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        text = str(source)
        if text.startswith("s3://"):
            from ..storage.destinations import read_s3_object

            data = read_s3_object(text, limit=limit)  # refuses a larger object by its stated length
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise InvalidRequestError(f"image: no such file: {shorten(str(path))}")
            try:
                with path.open("rb") as file:
                    data = file.read(limit + 1)
            except OSError as error:
                raise InvalidRequestError(f"image: cannot read {shorten(str(path))}: {error.strerror}") from error
    elif hasattr(source, "read"):
        data = source.read(limit + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidRequestError("image: file object must be opened in binary mode")
        data = bytes(data)
    else:
        raise InvalidRequestError(
            f"image must be a path, s3:// URI, bytes, binary file object or PIL image; got {type(source).__name__}"
        )
    if not data:
        raise InvalidRequestError("image is empty (0 bytes)")
    if len(data) > limit:
        raise InvalidRequestError(f"image {too_large}")
    return data


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InvalidRequestError(f"image is too large to decode safely (decompression bomb?): {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InvalidRequestError(f"image is not a readable JPEG/PNG/WebP/...: {error}") from error
    _check_dimensions(image)
    return image


def _decode(image: Image.Image, original: bytes | None) -> None:
    """Decode every pixel of ``image`` (and check a PNG's chunk checksums and end), or refuse it.

    Pillow stops at the last image data it needs, so a PNG cut after its pixels, or with a
    damaged chunk, still loads; ``verify`` (on a fresh reader: it consumes the file) reads
    every chunk's CRC and the closing IEND, as a strict server does.
    """
    try:
        image.load()
        if original is not None and image.format == "PNG":
            with Image.open(io.BytesIO(original)) as check:
                check.verify()
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise InvalidRequestError(f"image could not be decoded (truncated or corrupt): {error}") from error


def _check_dimensions(image: Image.Image) -> None:
    width, height = image.size
    if min(width, height) < 1 or max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise InvalidRequestError(
            f"image dimensions {width}x{height} are out of range "
            f"(at most {MAX_SIDE:,} pixels a side and {MAX_PIXELS:,} in all)"
        )


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not make a usable image unusable
        return 1


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Flatten any Pillow mode to 8-bit RGB, compositing alpha onto ``background``."""
    if image.mode.startswith("I;16"):
        # 16-bit greyscale: scale 0..65535 to 0..255 instead of clipping to white.
        image = image.convert("I").point(lambda value: value / 257).convert("L")
    elif image.mode == "I":
        _, highest = image.getextrema()
        divisor = 257 if isinstance(highest, (int, float)) and highest > 255 else 1
        image = image.point(lambda value: value / divisor).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        flattened = Image.new("RGB", rgba.size, background)
        flattened.paste(rgba, mask=rgba.getchannel("A"))
        return flattened
    return image.convert("RGB") if image.mode != "RGB" else image


def _fit(image: Image.Image, size: tuple[int, int], fit: Fit, background: tuple[int, int, int]) -> Image.Image:
    if image.size == size:
        return image
    if fit == "cover":
        return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    if fit == "contain":
        return ImageOps.pad(image, size, method=Image.Resampling.LANCZOS, color=background)
    return image.resize(size, Image.Resampling.LANCZOS)


def prepare_image(
    source: ImageSource,
    size: str,
    *,
    fit: Fit = "cover",
    output_format: OutputFormat | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    jpeg_quality: int = 92,
    max_bytes: int = MAX_IMAGE_BYTES,
) -> PreparedImage:
    """Fit ``source`` to ``size`` ("WIDTHxHEIGHT") and encode it for upload.

    Every input is decoded in full first: a truncated or corrupt image is refused
    (``InvalidRequestError``) before any request, as are inputs over ``max_bytes`` (read
    no further than that) or ``MAX_PIXELS``. An input already at the target size,
    upright and in a supported format is then sent byte for byte, so nothing is
    re-encoded needlessly.
    """
    if fit not in FITS:
        raise InvalidRequestError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    if output_format is not None and output_format.upper() not in FORMATS:
        raise InvalidRequestError(f"output_format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    width, height = (int(part) for part in size.split("x"))
    target = (width, height)

    if isinstance(source, Image.Image):
        _check_dimensions(source)
        image, original, source_format = source, None, None
    else:
        original = read_source_bytes(source, max_bytes)
        image = _open(original)
        source_format = image.format

    orientation = _orientation(image)
    wanted_format = (output_format or (source_format if source_format in FORMATS else "PNG")).upper()
    if (
        original is not None
        and source_format == wanted_format
        and image.size == target
        and orientation == 1
        and image.mode in ("RGB", "L")
    ):
        # Sent as it is, but only once every pixel decoded: a truncated file looks fine
        # in its header, and the server would refuse it after "nothing sent" was said.
        _decode(image, original)
        mime, extension = FORMATS[wanted_format]
        return PreparedImage(original, mime, f"reference.{extension}", width, height, unchanged=True)

    if image.format == "JPEG":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: a 24 MP photo then costs
        # a fraction of a full decode, and the result is still >= the target size.
        upright_target = (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else target
        image.draft("RGB", upright_target)
    _decode(image, original)
    try:
        image = ImageOps.exif_transpose(image) or image
        image = _to_rgb(image, background)
    except (OSError, SyntaxError, ValueError) as error:  # corrupt pixel data
        raise InvalidRequestError(f"image could not be decoded: {error}") from error
    fitted = _fit(image, target, fit, background)

    mime, extension = FORMATS[wanted_format]
    buffer = io.BytesIO()
    options: dict[str, object] = {"quality": jpeg_quality} if wanted_format in ("JPEG", "WEBP") else {}
    fitted.save(buffer, format=wanted_format, **options)
    return PreparedImage(buffer.getvalue(), mime, f"reference.{extension}", width, height, unchanged=False)
