"""cosine(chosen, rejected) in the map step (`curate.models.pair_cosine`): the same numbers
as the driver-side computation it replaced, chunked, from the store or the model, locally
and on Ray."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.models import embedder as E
from curate.models import pair_cosine as P
from curate.stages.keys import text_hash

KEY = "fakefingerprint-fp32"
DIM = 16


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(E.STORE_DTYPE)


def _fake_vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return _unit(np.random.default_rng(seed), 1)[0].astype(np.float32)


class FakeEmbedder:
    """Vectors from the text alone (no model), with the describe() of a real one."""

    name, fingerprint, precision, dim = "fake", "fakefingerprint", "fp32", DIM

    def __init__(self) -> None:
        self.calls: list[int] = []

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "fingerprint": self.fingerprint,
                "precision": self.precision, "probe_cosine": None, "dim": DIM}

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return np.stack([_fake_vector(t) for t in texts]) if texts else np.zeros((0, DIM))


def _rows_of(chosen: list[str], rejected: list[str], batch: int = 5) -> Any:
    def rows() -> Any:
        for a in range(0, len(chosen), batch):
            yield chosen[a:a + batch], rejected[a:a + batch]
    return rows


def _driver_side(ch: np.ndarray, rh: np.ndarray, table: E.EmbeddingTable) -> np.ndarray:
    """The computation `similar.decide` did before: float32 vectors of every unique text
    on the driver, then the row-wise product summed."""
    t32 = E.EmbeddingTable(table.hashes, table.vectors.astype(np.float32))
    return np.sum(t32.lookup(ch) * t32.lookup(rh), axis=1)


def _texts_and_hashes(n_texts: int, n_rows: int, seed: int) -> tuple[list[str], list[str],
                                                                    np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    texts = [f"response number {i} " + "x" * int(rng.integers(0, 5)) for i in range(n_texts)]
    ci = rng.integers(0, n_texts, n_rows)
    ri = rng.integers(0, n_texts, n_rows)
    ri[::9] = ci[::9]  # some rows with the same text twice (cosine 1)
    chosen = [texts[i] for i in ci]
    rejected = [texts[i] for i in ri]
    ch = np.array([text_hash(t) for t in chosen], dtype="S16")
    rh = np.array([text_hash(t) for t in rejected], dtype="S16")
    return chosen, rejected, ch, rh


def test_stored_vectors_give_the_driver_side_cosines_exactly(tmp_path: Path) -> None:
    chosen, rejected, ch, rh = _texts_and_hashes(60, 200, seed=1)
    uniq = np.unique(np.concatenate([ch, rh]))
    vecs = _unit(np.random.default_rng(2), len(uniq))
    # a third of the vectors are prompts already in memory, the rest in two store files
    third = len(uniq) // 3
    prompts = E.EmbeddingTable(uniq[:third], vecs[:third])
    E.write_embeddings(tmp_path / "store" / KEY / "a.parquet", uniq[third:2 * third],
                       vecs[third:2 * third], {})
    E.write_embeddings(tmp_path / "store" / KEY / "b.parquet", uniq[2 * third:],
                       vecs[2 * third:], {})
    want = _driver_side(ch, rh, E.EmbeddingTable(uniq, vecs))
    for per in (1, 7, 64, 1000):
        rc = P.response_cosines(ch, rh, _rows_of(chosen, rejected), E.EmbedSettings(cache=None),
                                KEY, prompts, [tmp_path / "store"], None,
                                spill_dir=tmp_path, rows_per_chunk=per)
        assert np.array_equal(rc.cosines, want), per  # bit for bit
        assert rc.stats["model_loaded"] is False and rc.stats["embedded"] == 0
        assert rc.stats["from_store"] == len(uniq) - third  # the prompts' are not "stored"
        # the output's embeddings file: every text once, sorted, the stored values
        out = tmp_path / f"emb-{per}.parquet"
        P.write_vectors(out, prompts, rc.vectors, {"key": KEY})
        t = pq.read_table(out)
        assert np.array_equal(E.hashes_to_numpy(t["text_hash"]), uniq)
        got = E._arrow_to_vectors(t["embedding"], DIM)
        assert np.array_equal(got, vecs)
        rc.keep.cleanup()


def test_computed_and_stored_mixed_over_chunks(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeEmbedder()
    monkeypatch.setattr(P, "get_embedder", lambda settings: fake)
    chosen, rejected, ch, rh = _texts_and_hashes(80, 300, seed=3)
    text_of = dict(zip(np.concatenate([ch, rh]).tolist(), chosen + rejected, strict=True))
    uniq = np.unique(np.concatenate([ch, rh]))
    all_vecs = np.stack([_fake_vector(text_of[h]) for h in uniq.tolist()]).astype(
        E.STORE_DTYPE)
    stored = np.arange(len(uniq)) % 2 == 0  # half stored, half for the model
    E.write_embeddings(tmp_path / "store" / KEY / "a.parquet", uniq[stored],
                       all_vecs[stored], {})
    cache = tmp_path / "cache"
    rc = P.response_cosines(ch, rh, _rows_of(chosen, rejected), E.EmbedSettings(cache=cache),
                            KEY, None, [tmp_path / "store"], None, spill_dir=tmp_path,
                            rows_per_chunk=32)
    assert np.array_equal(rc.cosines, _driver_side(ch, rh, E.EmbeddingTable(uniq, all_vecs)))
    s = rc.stats
    assert s["model_loaded"] and s["from_store"] == stored.sum()
    assert s["computed"] == (~stored).sum() <= s["embedded"] == sum(fake.calls)
    assert s["chunks"] == 10 and max(fake.calls) <= 64  # one chunk's texts at a time
    # the new vectors went to the cache: a second run embeds nothing
    fake.calls.clear()
    rc2 = P.response_cosines(ch, rh, _rows_of(chosen, rejected), E.EmbedSettings(cache=cache),
                             KEY, None, [tmp_path / "store"], None, spill_dir=tmp_path,
                             rows_per_chunk=32)
    assert np.array_equal(rc2.cosines, rc.cosines) and fake.calls == []
    assert rc2.stats["from_store"] == len(uniq) and not rc2.stats["model_loaded"]


def _model_rows() -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    from tests.similar_support import PARAPHRASES, SAME_TOPIC

    texts = [t for pair in PARAPHRASES + SAME_TOPIC for t in pair]
    chosen = texts + texts[:5]
    rejected = texts[::-1] + [t.lower() for t in texts[:5]]
    ch = np.array([text_hash(t) for t in chosen], dtype="S16")
    rh = np.array([text_hash(t) for t in rejected], dtype="S16")
    return chosen, rejected, ch, rh


def test_with_the_model_equals_embedding_every_text_first(tmp_path: Path) -> None:
    """Against the old path (ensure_embeddings over every unique text, then the product on
    the driver): the same cosines up to the float16 rounding of a vector whose batch
    differed (the model's batch composition moves the last bit)."""
    from curate.engine import get_engine

    chosen, rejected, ch, rh = _model_rows()
    settings = E.EmbedSettings(cache=None, precision="fp32")
    texts = dict(zip(np.concatenate([ch, rh]).tolist(), chosen + rejected, strict=True))
    table, key = E.ensure_embeddings(np.concatenate([ch, rh]),
                                     lambda missing: iter(texts.items()), settings)
    want = _driver_side(ch, rh, table)
    rc = P.response_cosines(ch, rh, _rows_of(chosen, rejected), settings, key, None, [],
                            get_engine("local", workers=1), spill_dir=tmp_path,
                            rows_per_chunk=8)
    assert rc.stats["model_loaded"] and rc.stats["computed"] == len(table.hashes)
    np.testing.assert_allclose(rc.cosines, want, atol=2e-3)
    assert np.mean(np.round(rc.cosines, 4) == np.round(want, 4)) >= 0.9


def test_on_ray_the_actors_give_the_local_cosines(local_ray: Any, tmp_path: Path) -> None:
    from curate.engine import get_engine

    chosen, rejected, ch, rh = _model_rows()
    settings = E.EmbedSettings(cache=None, precision="fp32")
    key = E.resolved_key(settings)
    assert key is not None
    runs = {}
    for name, engine in (("local", get_engine("local", workers=1)),
                         ("ray", get_engine("ray", workers=2))):
        rc = P.response_cosines(ch, rh, _rows_of(chosen, rejected), settings, key, None, [],
                                engine, spill_dir=tmp_path, rows_per_chunk=8)
        assert rc.stats["model_loaded"] and rc.stats["chunks_embedded"] == rc.stats["chunks"]
        runs[name] = rc.cosines
    np.testing.assert_allclose(runs["ray"], runs["local"], atol=1e-5)
    assert np.array_equal(np.round(runs["ray"], 4), np.round(runs["local"], 4))
