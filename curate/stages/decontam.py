"""`curate decontam`: reject training pairs whose prompt overlaps an eval set's.

The eval sets (any ingested dataset folders: rewardbench, vl-rewardbench, ...) are
small; their keys are built once in the main process: every N-gram hash of every
normalised eval prompt, a key of each whole normalised prompt, each prompt's last
user message (to embed), and each image's pHash. Tests, per training row:

- `ngram`: the prompt shares a run of N normalised words (`--ngram`, default 13) with
  an eval prompt of at least N words;
- `exact`: the whole normalised prompt (or its last user message) equals an eval
  prompt (or its last user message): they share a `curate.text.prompt_keys` key, the
  definition the `no_contamination` gate uses too; or the prompt contains a whole eval prompt of
  `--contain-min` (5) to N-1 words as a run of words: how prompts shorter than N
  words are compared;
- `embedding`: the last user message's embedding is within `--embed-threshold`
  cosine of an eval prompt's;
- `image`: an image is within `--image-distance` pHash bits of an eval image AND
  the prompts overlap (cosine >= `--image-prompt-threshold`, or `exact`/`ngram` with
  that same eval row).

A short eval prompt (fewer than N words) alone is weak evidence for a training row
that has images: 410 of VL-RewardBench's 1,250 prompts are "<image> Describe this
image in detail." So for such rows `exact` and `embedding` matches to short eval
prompts count only through the `image` test. Text-only rows have no such excuse.

The per-batch work (n-grams, whole keys, image distances) runs in the engine; the
embedding search runs over unique texts in the global step. Every row, kept or not,
gets `decontam_max_sim`, `decontam_match` (the nearest eval prompt by embedding),
`decontam_ngram_hits` (N-grams shared with the best eval row), `decontam_image_distance`
and `decontam_tests` (the tests that fired).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curate import dataset as D
from curate import text as T
from curate.index import dense
from curate.manifest import Manifest
from curate.models.embedder import EmbedSettings, ensure_embeddings, hashes_to_numpy
from curate.pipeline.entry import RUN_ONLY, configured, recorded
from curate.pipeline.runner import Decisions, register_stage, run_filter_stage
from curate.stages import keys as K
from curate.stages.similar import (
    _embedding_folders,
    _embedding_writer,
    _round,
    empty_decisions,
)

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

STAGE = "decontam"
REASON = "contaminated"
DEFAULT_NGRAM = 13
DEFAULT_EMBED_THRESHOLD = 0.9
DEFAULT_IMAGE_DISTANCE = 10
# On VL-RewardBench's prompts (MiniLM): rewordings of "describe this image in detail"
# score 0.47 with each other (median; p25 0.33), unrelated short questions 0.17 (median;
# p95 0.37), description requests vs specific questions at most 0.55 (p95 0.33). With the
# same picture already matched, 0.4 keeps the same request and drops other questions.
DEFAULT_IMAGE_PROMPT_THRESHOLD = 0.4
DEFAULT_CONTAIN_MIN = 5
MAX_IMAGE_CANDIDATES = 16
TESTS = ("ngram", "exact", "image", "embedding")

SCORE_FIELDS = [
    pa.field("decontam_max_sim", pa.float32()),
    pa.field("decontam_match", pa.string()),
    pa.field("decontam_ngram_hits", pa.int32()),
    pa.field("decontam_image_distance", pa.int32()),
    pa.field("decontam_tests", pa.string()),
]

KEY_SCHEMA = pa.schema([
    ("pair_id", pa.string()),
    ("query_hash", K.TEXT_HASH),
    ("has_images", pa.bool_()),
    ("exact_row", pa.int32()),
    ("ngram_row", pa.int32()),
    ("ngram_hits", pa.int32()),
    ("image_rows", pa.list_(pa.int32())),
    ("image_distance", pa.int32()),
])


@dataclass(frozen=True)
class DecontamConfig:
    ngram: int = DEFAULT_NGRAM
    embed_threshold: float = DEFAULT_EMBED_THRESHOLD
    image_distance: int = DEFAULT_IMAGE_DISTANCE
    image_prompt_threshold: float = DEFAULT_IMAGE_PROMPT_THRESHOLD
    contain_min: int = DEFAULT_CONTAIN_MIN
    # the eval dataset folders (recorded with their fingerprints)
    against: tuple[str | os.PathLike[str], ...] = field(default=(), metadata=RUN_ONLY)
    # recorded as `EmbedSettings.config()`; None: the default model and cache
    embed: EmbedSettings | None = field(default=None, metadata=RUN_ONLY)
    batch_size: int = field(default=512, metadata=RUN_ONLY)  # rows per annotate call

    def __post_init__(self) -> None:
        object.__setattr__(self, "against", tuple(self.against))
        if not 1 <= self.ngram <= 200:
            raise ValueError(f"--ngram must be in 1..200 words, got {self.ngram}")
        if self.contain_min < 1:
            raise ValueError(f"--contain-min must be at least 1 word, got {self.contain_min}")
        for name in ("embed_threshold", "image_prompt_threshold"):
            v = getattr(self, name)
            if not -1.0 <= v <= 1.01:
                raise ValueError(f"--{name.replace('_', '-')} is a cosine in [-1, 1] "
                                 f"(above 1 turns the test off), got {v}")
        if not 0 <= self.image_distance <= 32:
            raise ValueError(f"--image-distance must be in 0..32 bits, got {self.image_distance}")


# -- the eval side -----------------------------------------------------------------------
@dataclass
class EvalIndex:
    """Compact keys of all eval prompts (picklable: it travels with the per-batch work)."""

    n: int
    contain_min: int = DEFAULT_CONTAIN_MIN
    labels: list[str] = field(default_factory=list)  # "source:source_id" per eval row
    words: list[int] = field(default_factory=list)  # normalised word count per eval row
    has_images: list[bool] = field(default_factory=list)
    query_texts: list[str] = field(default_factory=list)  # last user message per eval row
    # run length -> (sorted hashes, eval row): N-grams of long prompts, and the whole
    # word run of each short prompt of contain_min..N-1 words
    grams: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    whole: dict[int, int] = field(default_factory=dict)  # whole-prompt key -> eval row
    image_codes: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    image_rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    sets: dict[str, int] = field(default_factory=dict)  # eval folder -> rows

    def __len__(self) -> int:
        return len(self.labels)

    def short(self, row: int) -> bool:
        return self.words[row] < self.n


def _whole_keys(prompt: Any) -> list[int]:
    """Hashes of the prompt's `curate.text.prompt_keys` (the `no_contamination` gate
    matches prompts by the same keys)."""
    return sorted({K.words_key(key) for key in T.prompt_keys(prompt)})


def build_eval_index(eval_dirs: Sequence[str | os.PathLike[str]], n: int,
                     contain_min: int = DEFAULT_CONTAIN_MIN) -> EvalIndex:
    """Read every eval row with a prompt (kept and rejected: a prompt the eval set holds
    is eval content even if a stage filtered its row) into an EvalIndex."""
    idx = EvalIndex(n=n, contain_min=contain_min)
    keys: dict[int, list[np.ndarray]] = {}
    rows: dict[int, list[np.ndarray]] = {}
    codes: list[int] = []
    code_rows: list[int] = []
    for folder in eval_dirs:
        ds = D.Dataset.open(folder)
        before = len(idx)
        for part in (D.KEPT, D.REJECTED):
            if not ds.files(part):
                continue
            names = ds.schema(part).names
            cols = [c for c in ("source", "source_id", "prompt") if c in names]
            cols += [c for c in K.image_columns(ds.schema(part)) if c in names]
            for batch in ds.iter_batches(part, columns=cols):
                phashes = K.row_phashes(batch)
                for i, (src, sid, prompt) in enumerate(zip(
                        batch.column("source").to_pylist(), batch.column("source_id").to_pylist(),
                        batch.column("prompt").to_pylist(), strict=True)):
                    words = T.normalise_words(T.prompt_text(prompt))
                    if not words:
                        continue
                    r = len(idx)
                    idx.labels.append(f"{src}:{sid}")
                    idx.words.append(len(words))
                    idx.query_texts.append(T.last_user_text(prompt))
                    idx.has_images.append(bool(phashes[i]))
                    for key in _whole_keys(prompt):
                        idx.whole.setdefault(key, r)
                    run = n if len(words) >= n else len(words)
                    if run == n or run >= contain_min:
                        grams = K.ngram_hashes(words, run)
                        keys.setdefault(run, []).append(grams)
                        rows.setdefault(run, []).append(np.full(len(grams), r, np.int32))
                    for c in phashes[i] or []:
                        codes.append(c)
                        code_rows.append(r)
        idx.sets[ds.location if hasattr(ds, "location") else str(folder)] = len(idx) - before
    for run in sorted(keys):
        allk, allr = np.concatenate(keys[run]), np.concatenate(rows[run])
        order = np.lexsort((allr, allk))  # by key, then the lowest eval row first
        allk, allr = allk[order], allr[order]
        first = np.ones(len(allk), dtype=bool)
        first[1:] = allk[1:] != allk[:-1]
        idx.grams[run] = (allk[first], allr[first])
    idx.image_codes = np.array(codes, dtype=np.uint64)
    idx.image_rows = np.array(code_rows, dtype=np.int32)
    return idx


# -- pass 1: per batch -------------------------------------------------------------------
def _run_match(words: list[str], keys: np.ndarray, rows: np.ndarray,
               run: int) -> tuple[int, int]:
    """(eval row sharing most `run`-word runs with `words`, how many), or (-1, 0)."""
    grams = np.unique(K.ngram_hashes(words, run))
    if not len(grams) or not len(keys):
        return -1, 0
    pos = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
    hit = keys[pos] == grams
    if not hit.any():
        return -1, 0
    counts = np.bincount(rows[pos[hit]])
    best = int(counts.argmax())  # ties: the lowest eval row
    return best, int(counts[best])


def _ngram_match(words: list[str], idx: EvalIndex) -> tuple[int, int, int]:
    """(eval row sharing most N-grams, how many, eval row whose whole short prompt the
    words contain (the longest such), or -1s and 0."""
    row, hits = _run_match(words, *idx.grams.get(idx.n, (np.empty(0, np.uint64),
                                                          np.empty(0, np.int32))), idx.n)
    contained = -1
    for run in sorted((r for r in idx.grams if r < idx.n), reverse=True):
        if run <= len(words):
            c, _ = _run_match(words, *idx.grams[run], run)
            if c >= 0:
                contained = c
                break
    return row, hits, contained


def _image_match(codes: list[int] | None, idx: EvalIndex,
                 radius: int) -> tuple[list[int], int | None]:
    """Eval rows with an image within `radius` bits of one of `codes` (closest first)."""
    if not codes or not len(idx.image_codes):
        return [], None
    q = np.array(codes, dtype=np.uint64)
    dist = np.bitwise_count(q[:, None] ^ idx.image_codes[None, :]).min(axis=0)
    ok = np.flatnonzero(dist <= radius)
    if not len(ok):
        return [], int(dist.min())
    best: dict[int, int] = {}
    for j in ok[np.lexsort((idx.image_rows[ok], dist[ok]))].tolist():
        best.setdefault(int(idx.image_rows[j]), int(dist[j]))
    rows = list(best)[:MAX_IMAGE_CANDIDATES]
    return rows, best[rows[0]]


@dataclass
class Annotator:
    """Pass 1 of decontam for one batch: exact, n-gram and image matches (pure)."""

    idx: EvalIndex
    image_distance: int

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        qh, has_img, exact, ng_row, ng_hits, img_rows, img_dist = [], [], [], [], [], [], []
        phashes = K.row_phashes(batch)
        for i, prompt in enumerate(batch.column("prompt").to_pylist()):
            qh.append(K.text_hash(T.last_user_text(prompt)))
            has_img.append(phashes[i] is None or bool(phashes[i]))
            r, hits, contained = _ngram_match(T.normalise_words(T.prompt_text(prompt)),
                                              self.idx)
            exact.append(next((self.idx.whole[k] for k in _whole_keys(prompt)
                               if k in self.idx.whole), contained))
            ng_row.append(r)
            ng_hits.append(hits)
            rows, dist = _image_match(phashes[i], self.idx, self.image_distance)
            img_rows.append(rows)
            img_dist.append(dist)
        return pa.RecordBatch.from_arrays(
            [batch.column("pair_id"), pa.array(qh, K.TEXT_HASH), pa.array(has_img, pa.bool_()),
             pa.array(exact, pa.int32()), pa.array(ng_row, pa.int32()),
             pa.array(ng_hits, pa.int32()), pa.array(img_rows, pa.list_(pa.int32())),
             pa.array(img_dist, pa.int32())],
            schema=KEY_SCHEMA)


# -- the global step ---------------------------------------------------------------------
def _text_source(datasets: list[D.Dataset], idx: EvalIndex) -> Any:
    def texts(missing: np.ndarray) -> Iterator[tuple[bytes, str]]:
        for t in idx.query_texts:
            yield K.text_hash(t), t
        for batch in D.iter_inputs(datasets, columns=["prompt"]):
            for prompt in batch.column("prompt").to_pylist():
                t = T.last_user_text(prompt)
                yield K.text_hash(t), t

    return texts


def decide(keys: pa.Table, cfg: DecontamConfig, idx: EvalIndex, embed: EmbedSettings,
           datasets: list[D.Dataset], out: Path, engine: Engine | None = None) -> Decisions:
    n = keys.num_rows
    if n == 0:
        return Decisions(empty_decisions(SCORE_FIELDS))
    qh = hashes_to_numpy(keys["query_hash"])
    eh = np.array([K.text_hash(t) for t in idx.query_texts], dtype="S16")
    table, key = ensure_embeddings(np.concatenate([qh, eh]), _text_source(datasets, idx),
                                   embed, _embedding_folders(datasets, out), engine=engine)
    # nearest eval prompt of each unique training query
    e_uniq, e_first = np.unique(eh, return_index=True)
    t_uniq, t_of_row = np.unique(qh, return_inverse=True)
    if len(e_uniq) and len(t_uniq):
        nb = dense.knn(table.lookup(e_uniq), 1, table.lookup(t_uniq))
        best_sim = _round(nb.sims[:, 0])
        best_eval = e_first[nb.ids[:, 0]]
    else:
        best_sim = np.full(len(t_uniq), np.nan, np.float32)
        best_eval = np.full(len(t_uniq), -1, np.int64)
    evec = table.lookup(eh) if len(eh) else None

    has_img = keys["has_images"].to_pylist()
    exact = keys["exact_row"].to_pylist()
    ng_row = keys["ngram_row"].to_pylist()
    ng_hits = keys["ngram_hits"].to_pylist()
    img_rows = keys["image_rows"].to_pylist()
    img_dist = keys["image_distance"].to_pylist()
    reason: list[str | None] = [None] * n
    detail: list[str | None] = [None] * n
    fired_col: list[str | None] = [None] * n
    max_sim = np.full(n, np.nan, np.float32)
    match: list[str | None] = [None] * n
    fired_count = dict.fromkeys(TESTS, 0)
    for r in range(n):
        t = t_of_row[r]
        sim, ev = float(best_sim[t]), int(best_eval[t])
        max_sim[r] = sim
        match[r] = idx.labels[ev] if ev >= 0 else None
        # text-only evidence against a short eval prompt needs the image test on image rows
        img_row = bool(has_img[r])

        def text_ok(e: int, img_row: bool = img_row) -> bool:
            return e >= 0 and not (img_row and idx.short(e))

        fired: list[tuple[str, int, str]] = []
        if ng_row[r] >= 0:
            fired.append(("ngram", ng_row[r], f"{ng_hits[r]} shared {cfg.ngram}-grams"))
        if text_ok(exact[r]):
            fired.append(("exact", exact[r], "whole normalised prompt"))
        if img_rows[r] and evec is not None:
            qv = table.lookup(qh[r:r + 1])[0]
            for e in img_rows[r]:
                psim = float(_round(np.array([qv @ evec[e]]))[0])
                if psim >= cfg.image_prompt_threshold or e in (exact[r], ng_row[r]):
                    fired.append(("image", e, f"pHash {img_dist[r]} bits, "
                                              f"prompt cosine {psim:.4f}"))
                    break
        if ev >= 0 and sim >= cfg.embed_threshold and text_ok(ev):
            fired.append(("embedding", ev, f"cosine {sim:.4f}"))
        if fired:
            reason[r] = REASON
            detail[r] = "; ".join(f"{test}: {idx.labels[e]} ({info})" for test, e, info in fired)
            fired_col[r] = ",".join(test for test, _, _ in fired)
            for test, _, _ in fired:
                fired_count[test] += 1
    decisions = pa.table({
        "pair_id": keys["pair_id"],
        "reject_reason": pa.array(reason, pa.string()),
        "reject_detail": pa.array(detail, pa.string()),
        "decontam_max_sim": pa.array(max_sim, pa.float32(), from_pandas=True),
        "decontam_match": pa.array(match, pa.string()),
        "decontam_ngram_hits": pa.array(ng_hits, pa.int32()),
        "decontam_image_distance": pa.array(img_dist, pa.int32()),
        "decontam_tests": pa.array(fired_col, pa.string()),
    })
    extra = {
        "embeddings": {**table.stats, "key": key,
                       "file": f"embeddings/{key}/part-00000.parquet"},
        "eval_sets": idx.sets,
        "eval_index": {"rows": len(idx), "ngrams": int(sum(len(k) for k, _ in
                                                           idx.grams.values())),
                       "images": int(len(idx.image_codes)),
                       "short_prompts": int(sum(w < idx.n for w in idx.words))},
        "tests_fired": fired_count,
    }
    return Decisions(decisions, extra, write_files=_embedding_writer(table, key))


def run(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
        cfg: DecontamConfig, *, engine: Engine | None = None, force: bool = False) -> Manifest:
    """Run `curate decontam` over the kept rows of `inputs` against the eval dataset
    folders `cfg.against`, into `out`; returns the manifest."""
    from curate.engine import get_engine
    from curate.models.embedder import default_cache

    if not cfg.against:
        raise ValueError("--against: name at least one eval dataset folder")
    embed = cfg.embed or EmbedSettings(cache=default_cache(inputs))
    engine = engine or get_engine("local")
    datasets = [D.Dataset.open(p) for p in inputs]
    evals = [D.Dataset.open(p) for p in cfg.against]
    idx = build_eval_index(list(cfg.against), cfg.ngram, cfg.contain_min)
    schema = D.unified_schema(datasets)
    columns = ["pair_id", "prompt", *K.image_columns(schema)]
    full_cfg = {**recorded(cfg), **embed.config(),
                "against": [{"path": e.location if hasattr(e, "location") else str(e.path),
                             "fingerprint": e.fingerprint} for e in evals]}
    return run_filter_stage(
        STAGE, inputs, out, full_cfg,
        annotate=Annotator(idx, cfg.image_distance), annotate_columns=columns,
        decide=lambda keys: decide(keys, cfg, idx, embed, datasets, Path(out), engine),
        engine=engine, force=force, batch_size=cfg.batch_size,
    )


def decontam(inputs: Sequence[str | os.PathLike[str]], against: Sequence[str | os.PathLike[str]],
             out: str | os.PathLike[str], *, config: DecontamConfig | None = None,
             engine: Engine | None = None, force: bool = False, **options: Any) -> Manifest:
    """`run` against the eval folders `against`, with `config` (default: DecontamConfig())
    and DecontamConfig's fields as keywords."""
    cfg = configured(DecontamConfig, config, {**options, "against": tuple(against)})
    return run(inputs, out, cfg, engine=engine, force=force)


register_stage(STAGE, 40, filter=True, run=run, config=DecontamConfig)
