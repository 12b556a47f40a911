"""The embedder: fast path vs fp32, the store and cache, model resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate.models import embedder as E
from curate.stages.keys import text_hash
from tests.similar_support import PARAPHRASES, SAME_TOPIC, light_edit

TEXTS = sorted({t for pair in PARAPHRASES + SAME_TOPIC for t in pair}) + [
    light_edit(t, i, __import__("random").Random(i)) for i, (t, _) in enumerate(PARAPHRASES)
] + [" ".join(["word"] * 300), "", "😀 émoji ünïcode テスト"]


@pytest.fixture(scope="module")
def auto() -> E.Embedder:
    return E.get_embedder(E.EmbedSettings())


@pytest.mark.skipif(not E.cpu_has_native_bf16(), reason="CPU without native bf16")
def test_fast_path_within_cosine_099_of_fp32(auto: E.Embedder) -> None:
    exact = E.get_embedder(E.EmbedSettings(precision="fp32"))
    assert auto.precision == "bf16" and exact.precision == "fp32"
    assert auto.probe_cosine is not None and auto.probe_cosine >= E.MIN_FAST_COSINE
    a, b = auto.encode(TEXTS), exact.encode(TEXTS)
    cos = np.sum(a * b, axis=1)
    assert cos.min() >= 0.99, cos.min()
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-3)


@pytest.mark.slow
def test_fast_path_refused_when_probe_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """(slow: loads another copy of the model)"""
    monkeypatch.setattr(E, "fast_path_available", lambda device: True)
    monkeypatch.setattr(E, "PROBE_TEXTS", E.PROBE_TEXTS[:3])  # (the decision, not the set)
    emb = E.Embedder(precision="auto", min_cosine=1.01)  # no path can pass this
    assert emb.precision == "fp32" and emb.probe_cosine is not None


def _source(texts: list[str], calls: list[int]):
    def texts_fn(missing: np.ndarray):
        calls.append(len(missing))
        for t in texts:
            yield text_hash(t), t
    return texts_fn


def test_each_text_embedded_once_and_cached(tmp_path: Path, auto: E.Embedder) -> None:
    texts = ["alpha beta", "gamma delta", "alpha beta", "epsilon"]
    hashes = np.array([text_hash(t) for t in texts], dtype="S16")
    s = E.EmbedSettings(cache=tmp_path / "cache")
    calls: list[int] = []
    table, key = E.ensure_embeddings(hashes, _source(texts, calls), s)
    assert table.stats["computed"] == 3 and table.stats["unique_texts"] == 3
    assert key == auto.key
    v = table.lookup(hashes)
    assert np.allclose(v[0], v[2]) and v.shape == (4, auto.dim)
    # a second call: nothing computed, the model is not even needed, same vectors
    table2, key2 = E.ensure_embeddings(hashes, _source(texts, calls), s)
    assert table2.stats["computed"] == 0 and table2.stats["model_loaded"] is False
    assert key2 == key and np.array_equal(table2.vectors, table.vectors)
    assert calls == [3]
    assert json.loads(next((tmp_path / "cache" / "precision").glob("*.json")).read_text())


def test_store_round_trip_and_damaged_file(tmp_path: Path) -> None:
    h = np.array([text_hash(str(i)) for i in range(5)], dtype="S16")
    v = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    E.write_embeddings(tmp_path / "k" / "a.parquet", h, v, {"key": "k"})
    (tmp_path / "k" / "b.parquet").write_bytes(b"not parquet")
    store = E.EmbeddingStore("k", None, [tmp_path], None)
    got_h, got_v = store.find(np.sort(h[:3]))
    assert set(got_h.tolist()) == set(h[:3].tolist())
    order = np.argsort(h[:3])
    assert np.allclose(got_v.astype(np.float32), v[:3][order], atol=1e-2)


def test_missing_texts_are_an_error(tmp_path: Path, auto: E.Embedder) -> None:
    hashes = np.array([text_hash("never yielded")], dtype="S16")
    with pytest.raises(RuntimeError):
        E.ensure_embeddings(hashes, _source([], []), E.EmbedSettings(cache=None))


def test_resolve_model(tmp_path: Path) -> None:
    assert E.resolve_model(None) == E.resolve_model("all-MiniLM-L6-v2")
    assert (E.resolve_model(None) / "config.json").is_file()
    with pytest.raises(ValueError, match="no such model folder"):
        E.resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ValueError):
        E.Embedder(precision="int4")


def test_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CURATE_CACHE", raising=False)
    assert E.default_cache([tmp_path / "a"]) == tmp_path / ".curate-cache" / "embeddings"
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "c"))
    assert E.default_cache([tmp_path / "a"]) == tmp_path / "c" / "embeddings"
    assert E.cache_option("none", [tmp_path]) is None
