"""Perceptual image hashes (64-bit ints), decoded at reduced size for speed.

Decoding dominates the cost of a perceptual hash, and every hash here looks at
no more than a 64x64 grayscale picture, so images are decoded small: JPEGs with
`Image.draft` (the decoder scales by 1/2, 1/4 or 1/8 in the DCT domain and skips
the colour conversion: 3-4x faster than a full decode), other formats decoded
then box-reduced. The hash itself is `imagehash`'s on that reduced picture (pHash
re-implemented bit for bit in numpy, the others called); it differs from a
full-size `imagehash` value by 0 to a few bits (measured in
`tests/test_dedup_hashing.py` and `bench/bench_dedup.py`). Bit order is
imagehash's: its hex string read as one big-endian 64-bit integer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from PIL import Image

from curate.images import open_allowed

METHODS = ("phash", "dhash", "ahash", "whash")
DEFAULT_METHOD = "phash"
HASH_SIZE = 8  # 8x8 = 64 bits, so a hash fits a uint64
_DECODE_SIDE = 64  # decode no smaller than this many pixels a side


@functools.cache
def _dct_rows(n: int, k: int) -> np.ndarray:
    """The first `k` rows of scipy.fftpack's unnormalised DCT-II matrix of size `n`."""
    i = np.arange(k)[:, None]
    j = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * i * (2 * j + 1) / (2 * n))


def _phash(image: Image.Image, hash_size: int = HASH_SIZE, highfreq_factor: int = 4) -> str:
    """imagehash.phash, bit for bit, as two small matrix products instead of scipy's DCT
    (importing scipy costs each worker process a third of a second)."""
    size = hash_size * highfreq_factor
    pixels = np.asarray(image.convert("L").resize((size, size), Image.Resampling.LANCZOS),
                        dtype=np.float64)
    d = _dct_rows(size, hash_size)
    low = d @ pixels @ d.T
    bits = (low > np.median(low)).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{hash_size * hash_size // 4}x}"


def _hash_fn(method: str) -> Callable[..., object]:
    if method == "phash":
        return _phash
    import imagehash

    fns = {"dhash": imagehash.dhash, "ahash": imagehash.average_hash, "whash": imagehash.whash}
    try:
        return fns[method]
    except KeyError:
        raise ValueError(
            f"unknown hash method {method!r}; choose one of {', '.join(METHODS)}") from None


def load_gray(data: bytes, side: int = _DECODE_SIDE) -> Image.Image:
    """Decode `data` to grayscale, no smaller than `side` pixels a side where it is larger."""
    im = open_allowed(data)
    if im.format == "JPEG":
        im.draft("L", (side, side))
    im = im.convert("L")
    factor = 1
    while min(im.size) // (factor * 2) >= side:
        factor *= 2
    if factor > 1:  # other formats, or JPEGs past draft's 1/8: box-reduce by a power of 2,
        im = im.reduce(factor)  # as draft would, so a PNG and a JPEG copy end the same size
    return im


def perceptual_hash(data: bytes, method: str = DEFAULT_METHOD, hash_size: int = HASH_SIZE) -> int:
    """The perceptual hash of an encoded image as an int; raises on undecodable data."""
    fn = _hash_fn(method)
    im = load_gray(data, max(_DECODE_SIDE, hash_size * 8))
    return int(str(fn(im, hash_size=hash_size)), 16)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def to_hex(code: int) -> str:
    """The 16-digit hex form imagehash prints."""
    return f"{code:016x}"
