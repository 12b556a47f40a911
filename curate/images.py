"""Image validation: decode fully once, guard against bombs, record size and content hashes."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import xxhash
from PIL import Image, ImageFile, UnidentifiedImageError

PIL_DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own Image.MAX_IMAGE_PIXELS
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024  # an encoded image; photos are a few MB

# The formats an image is decoded as; nothing else reaches a decoder. These are what
# VLM datasets hold (MPO, the multi-picture JPEG of phone cameras, opens as JPEG).
# PostScript/EPS (which Pillow hands to Ghostscript), PSD, FITS, ... are refused by
# name (`unsupported_image_format`), whatever the file is called.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def open_allowed(data: bytes) -> Image.Image:
    """`Image.open` restricted to `ALLOWED_FORMATS`: bytes of any other format never reach
    a decoder (Ghostscript for PostScript, ...), wherever a stage or the report decodes."""
    return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)

# Work on photos (tens of KB and more) is Pillow decoding, which drops the GIL: threads
# of the driver run it with no worker start-up and no image pickled (ingest of 520 MB of
# 512-1024 px JPEGs: 8.3 s on threads, 11.0 s in processes; dedup hashing of 300
# 1024x768 JPEGs: 0.42 s against 0.82 s). Small images spend their time in Python per
# image, which holds the GIL (50k 96x72 thumbnails: ingest 13.3 s on threads, 9.5 s in
# processes; dedup hashing of 99k: 33 s against 16 s). The local engine picks threads
# from this mean encoded size per row up.
THREADS_MIN_IMAGE_BYTES = 32 * 1024


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    pixel_hash: str
    width: int
    height: int
    format: str


class ImageRejected(Exception):
    """An image that sends its row to rejected; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def inspect_image(data: bytes, max_pixels: int = PIL_DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Fully decode `data` (so truncated files are caught) and describe it.

    Raises ImageRejected('corrupt_image' | 'image_too_large' | 'unsupported_image_format',
    detail); only `ALLOWED_FORMATS` are decoded.
    The pixel hash (xxh3-128, ~20x faster than sha256 on megabytes of pixels) covers
    mode, size and every decoded pixel of the first frame, so the same picture saved
    twice (other metadata, other container) hashes the same.
    """
    if not data:
        raise ImageRejected("corrupt_image", "empty image bytes")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with _own_pixel_limit(), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = open_allowed(data)
            width, height = im.size
            if width * height > max_pixels:
                raise ImageRejected(
                    "image_too_large", f"{width}x{height} exceeds --max-pixels {max_pixels}"
                )
            fmt = im.format or "UNKNOWN"
            im.load()
            ph = _pixel_hash(im)
    except ImageRejected:
        raise
    except UnidentifiedImageError as exc:
        other = other_format(data)
        if other is not None:
            raise ImageRejected("unsupported_image_format",
                                f"{other} is not decoded (allowed: {', '.join(ALLOWED_FORMATS)})"
                                ) from exc
        raise ImageRejected("corrupt_image", f"{type(exc).__name__}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageRejected("corrupt_image", f"{type(exc).__name__}: {exc}") from exc
    return ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        pixel_hash=ph,
        width=width,
        height=height,
        format=fmt,
    )


def other_format(data: bytes) -> str | None:
    """The name of a format outside the allowlist that `data` starts like, by the
    plugins' own signature checks on its first bytes (no plugin opens the data)."""
    Image.init()
    prefix = data[:16]
    for name, (_factory, accept) in Image.OPEN.items():
        if name in ALLOWED_FORMATS or accept is None:
            continue
        try:
            if accept(prefix):
                return name
        except Exception:  # noqa: BLE001,S112 - a plugin's check failing says "not this one"
            continue
    return None


_LIMIT_LOCK = threading.Lock()
_LIMIT_USERS = 0
_SAVED_LIMIT: int | None = None


@contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Lift Pillow's global bomb limit while any thread inspects images (we check our own).

    Reference-counted, so concurrent inspections on threads never restore the limit
    under one another; the last one out puts Pillow's value back.
    """
    global _LIMIT_USERS, _SAVED_LIMIT
    with _LIMIT_LOCK:
        if _LIMIT_USERS == 0:
            _SAVED_LIMIT = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _LIMIT_USERS += 1
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _LIMIT_USERS -= 1
            if _LIMIT_USERS == 0:
                Image.MAX_IMAGE_PIXELS = _SAVED_LIMIT


def _pixel_hash(im: Image.Image) -> str:
    """xxh3-128 over mode, size and the decoded pixels.

    Pillow's Arrow export hands over its pixel buffer without a copy (RGB pixels are
    4 bytes with a constant pad byte, the same whichever decoder made them); modes
    without Arrow export fall back to `tobytes()`.
    """
    h = xxhash.xxh3_128(f"{im.mode}|{im.width}x{im.height}|".encode())
    try:
        import pyarrow as pa

        arr = pa.array(im)
    except Exception:  # mode without Arrow export
        h.update(b"bytes|")
        h.update(im.tobytes())
        return h.hexdigest()
    h.update(b"arrow|")
    for buf in arr.buffers():
        if buf is not None:
            h.update(memoryview(buf))
    return h.hexdigest()


def resolve_image_path(path: str, root: Path | None) -> Path:
    """Resolve a relative image path under `root`; refuse anything that escapes it.

    Raises ImageRejected('image_path_escape' | 'missing_image' | 'no_image_root' |
    'invalid_image_path': a NUL byte, a name longer than the file system allows, any
    other OSError or ValueError of the path checks).
    """
    shown = _shown(path)
    if root is None:
        raise ImageRejected("no_image_root", f"image path {shown} given but no --image-root")
    try:
        root_real = Path(os.path.realpath(root))
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = root_real / candidate
        real = Path(os.path.realpath(candidate))
        if real != root_real and root_real not in real.parents:
            raise ImageRejected("image_path_escape", f"{shown} resolves outside {root}")
        if not real.is_file():
            raise ImageRejected("missing_image", f"{shown} not found under {root}")
    except (OSError, ValueError) as exc:  # ENAMETOOLONG, ELOOP, NUL, unencodable text
        raise ImageRejected("invalid_image_path",
                            f"{shown}: {type(exc).__name__}: {_shown(str(exc), 200)}") from exc
    return real


def read_image_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of an image file, refused (`image_too_large`) from its size on disk
    before any is read, and never reading more than `max_bytes` + 1 (a file that grows)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageRejected("image_too_large", f"{_shown(str(path))} is {size:,} bytes, over "
                                f"--max-image-bytes {max_bytes:,}")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ImageRejected("unreadable_image",
                            f"{_shown(str(path))}: {exc.strerror or exc}") from exc
    check_image_size(data, max_bytes)
    return data


def check_image_size(data: bytes, max_bytes: int) -> None:
    """Refuse (`image_too_large`) encoded image bytes over `max_bytes`."""
    if len(data) > max_bytes:
        raise ImageRejected("image_too_large", f"{len(data):,} bytes of image, over "
                            f"--max-image-bytes {max_bytes:,}")


def _shown(text: str, limit: int = 120) -> str:
    """`text` for a message: repr'd (which escapes surrogates), cut to `limit` characters."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 5] + "...'" + f" ({len(text):,} chars)"


def image_record(data: bytes, info: ImageInfo) -> dict[str, object]:
    return {
        "bytes": data,
        "sha256": info.sha256,
        "pixel_hash": info.pixel_hash,
        "width": info.width,
        "height": info.height,
        "format": info.format,
    }
