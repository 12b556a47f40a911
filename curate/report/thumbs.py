"""Small inline JPEG thumbnails (data: URIs), cached by content so each image is made once."""

from __future__ import annotations

import base64
import hashlib
import io
import warnings

from PIL import Image

from curate.images import open_allowed

THUMB_SIDE = 160
THUMB_QUALITY = 70
MAX_PIXELS = 89_478_485  # refuse to decode larger images (decompression bombs)


class Thumbnails:
    """`uri(bytes)` -> a `data:image/jpeg;base64,...` thumbnail, or None if it does not decode."""

    def __init__(self, side: int = THUMB_SIDE, quality: int = THUMB_QUALITY) -> None:
        self.side = side
        self.quality = quality
        self._cache: dict[str, str | None] = {}

    def uri(self, data: bytes | None) -> str | None:
        if not data:
            return None
        key = hashlib.sha256(data).hexdigest()
        if key not in self._cache:
            self._cache[key] = self._make(data)
        return self._cache[key]

    def _make(self, data: bytes) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = open_allowed(data)
                if im.width * im.height > MAX_PIXELS:
                    return None
                if im.format == "JPEG":
                    im.draft("RGB", (self.side, self.side))
                im.thumbnail((self.side, self.side))
                if im.mode not in ("RGB", "L"):
                    rgba = im.convert("RGBA")
                    im = Image.new("RGB", rgba.size, (255, 255, 255))
                    im.paste(rgba, mask=rgba.getchannel("A"))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=self.quality, optimize=True)
        except Exception:  # any undecodable image becomes a placeholder, never a crash
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
