"""Perceptual hashes decoded small: agreement with imagehash, formats, errors."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from curate.hashing import METHODS, hamming, load_gray, perceptual_hash, to_hex
from tests.dedup_support import encode


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def _imagehash(data: bytes, method: str = "phash") -> int:
    """The baseline: imagehash on a full decode, as its README shows it."""
    import imagehash

    fn = {"phash": imagehash.phash, "dhash": imagehash.dhash,
          "ahash": imagehash.average_hash, "whash": imagehash.whash}[method]
    return int(str(fn(Image.open(io.BytesIO(data)).convert("RGB"))), 16)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "rocket", "chelsea"])
def test_draft_decoded_phash_is_close_to_a_full_decode(name: str) -> None:
    data = encode(_photo(name), quality=90)
    assert hamming(perceptual_hash(data), _imagehash(data)) <= 6


@pytest.mark.parametrize("method", METHODS)
def test_small_png_hashes_equal_imagehash_bit_for_bit(method: str) -> None:
    im = _photo("coffee").resize((96, 64))  # below the reduced size: nothing to shrink
    data = encode(im, "PNG")
    assert perceptual_hash(data, method) == _imagehash(data, method)


def test_jpeg_and_png_copies_decode_to_the_same_reduced_size() -> None:
    im = _photo("astronaut").resize((1024, 768))
    jpeg, png = load_gray(encode(im, quality=90)), load_gray(encode(im, "PNG"))
    assert jpeg.mode == png.mode == "L"
    assert jpeg.size == png.size == (128, 96)
    assert hamming(perceptual_hash(encode(im, quality=90)), perceptual_hash(encode(im, "PNG"))) <= 2


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_64_bits(method: str) -> None:
    code = perceptual_hash(encode(_photo("rocket")), method)
    assert 0 <= code < 2**64
    assert len(to_hex(code)) == 16


def test_undecodable_data_raises() -> None:
    with pytest.raises(OSError):
        perceptual_hash(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    truncated = encode(_photo("coffee"), quality=90)[:3000]
    with pytest.raises(OSError):
        perceptual_hash(truncated)


def test_unknown_method_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown hash method"):
        perceptual_hash(encode(_photo("rocket")), "md5")
