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

    Raises ImageRejected('corrupt_image' | 'image_too_large', detail).
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
            im = Image.open(io.BytesIO(data))
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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt_image", f"{type(exc).__name__}: {exc}") from exc
    return ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        pixel_hash=ph,
        width=width,
        height=height,
        format=fmt,
    )


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

    Raises ImageRejected('image_path_escape' | 'missing_image' | 'no_image_root').
    """
    if root is None:
        raise ImageRejected("no_image_root", f"image path {path!r} given but no --image-root")
    root_real = Path(os.path.realpath(root))
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root_real / candidate
    real = Path(os.path.realpath(candidate))
    if real != root_real and root_real not in real.parents:
        raise ImageRejected("image_path_escape", f"{path!r} resolves outside {root}")
    if not real.is_file():
        raise ImageRejected("missing_image", f"{path!r} not found under {root}")
    return real


def image_record(data: bytes, info: ImageInfo) -> dict[str, object]:
    return {
        "bytes": data,
        "sha256": info.sha256,
        "pixel_hash": info.pixel_hash,
        "width": info.width,
        "height": info.height,
        "format": info.format,
    }
