"""`curate similar`: semantic near-duplicate prompts, and pairs with no preference signal.

Pass 1 (per batch, in the engine): hash each row's prompt text and responses (the
embedding keys) and take its images' pHashes. The prompt text is its last user
message followed by the earlier messages newest first (`keys.prompt_view`): the model
reads 256 word pieces, so it sees the question being answered and the latest context.
Global step (`decide`):
1. embed every unique prompt text once (`curate.models.embedder.ensure_embeddings`:
   cached vectors cost no model time); the driver holds them as float16 (the stored
   values, exactly; half of float32's memory) for the kNN;
2. `responses_too_similar`: cosine(chosen, rejected) >= `response_threshold`, computed in
   the map step where the responses are embedded (`curate.models.pair_cosine`: locally
   in this process, on Ray in the embedding actors): the driver gets one float per row,
   never the response vectors (they wait on disk to be written into `embeddings/`);
3. `similar_prompt`: k nearest unique prompt texts (faiss, exact or IVF by size), edges
   with cosine >= `threshold`; rows join one group (union-find) when their prompts are
   the same text or joined by an edge AND their images are near duplicates (same
   count, each pHash within `image_distance` bits) or both have none. Each group keeps
   its first row in input order (so inputs listed first win) and rejects the rest
   with the kept `pair_id` and the cosine between the two prompts.
Scores go into columns of every row, kept or rejected: `similar_prompt_sim` (cosine to
the most similar other prompt), `similar_prompt_match` (that row's pair_id),
`similar_response_sim` and `similar_group` (pair_id of the row its group keeps).
Similarities are rounded to 4 decimals, and thresholds compare the rounded values, so
a row is rejected exactly when its printed score passes the printed threshold.
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
from curate.index import dense
from curate.manifest import Manifest
from curate.models.embedder import (
    STORE_DTYPE,
    EmbeddingTable,
    EmbedSettings,
    ensure_embeddings,
    hashes_to_numpy,
)
from curate.models.pair_cosine import ResponseCosines, response_cosines
from curate.pipeline.entry import RUN_ONLY, configured, recorded
from curate.pipeline.runner import Decisions, register_stage, run_filter_stage
from curate.stages import keys as K

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

STAGE = "similar"
DEFAULT_THRESHOLD = 0.95
DEFAULT_RESPONSE_THRESHOLD = 0.99
DEFAULT_IMAGE_DISTANCE = 10  # pHash bits; the same default as `curate dedup`
DEFAULT_K = 10
ROUND = 4

SCORE_FIELDS = [
    pa.field("similar_prompt_sim", pa.float32()),
    pa.field("similar_prompt_match", pa.string()),
    pa.field("similar_response_sim", pa.float32()),
    pa.field("similar_group", pa.string()),
]


def empty_decisions(score_fields: list[pa.Field]) -> pa.Table:
    """The decisions of a stage over no rows (an input with no kept rows)."""
    return pa.schema([pa.field("pair_id", pa.string()), pa.field("reject_reason", pa.string()),
                      pa.field("reject_detail", pa.string()), *score_fields]).empty_table()


KEY_SCHEMA = pa.schema([
    ("pair_id", pa.string()),
    ("prompt_hash", K.TEXT_HASH),
    ("chosen_hash", K.TEXT_HASH),
    ("rejected_hash", K.TEXT_HASH),
    ("phashes", pa.list_(pa.uint64())),  # null: an image could not be hashed
])


@dataclass(frozen=True)
class SimilarConfig:
    threshold: float = DEFAULT_THRESHOLD
    response_threshold: float = DEFAULT_RESPONSE_THRESHOLD
    image_distance: int = DEFAULT_IMAGE_DISTANCE
    k: int = DEFAULT_K
    exact_max: int = dense.EXACT_MAX
    nprobe: int = dense.DEFAULT_NPROBE
    # the model, precision and cache (None: the default model, the inputs' default cache);
    # recorded as `EmbedSettings.config()`, the part of it that changes the output
    embed: EmbedSettings | None = field(default=None, metadata=RUN_ONLY)
    batch_size: int = field(default=512, metadata=RUN_ONLY)  # rows per annotate call

    def __post_init__(self) -> None:
        for name in ("threshold", "response_threshold"):
            v = getattr(self, name)
            if not -1.0 <= v <= 1.01:
                raise ValueError(f"--{name.replace('_', '-')} is a cosine in [-1, 1] "
                                 f"(above 1 turns the test off), got {v}")
        if not 0 <= self.image_distance <= 32:
            raise ValueError(f"--image-distance must be in 0..32 bits, got {self.image_distance}")
        if self.k < 2:
            raise ValueError(f"--k must be at least 2, got {self.k}")


def _texts(row_prompt: Any, chosen: Any, rejected: Any) -> tuple[str, str, str]:
    return K.prompt_view(row_prompt), chosen or "", rejected or ""


def annotate(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Pass 1: text hashes and image pHashes of one batch (pure)."""
    prompts = batch.column("prompt").to_pylist()
    chosen = batch.column("chosen").to_pylist()
    rejected = batch.column("rejected").to_pylist()
    ph, ch, rh = [], [], []
    for p, c, r in zip(prompts, chosen, rejected, strict=True):
        tp, tc, tr = _texts(p, c, r)
        ph.append(K.text_hash(tp))
        ch.append(K.text_hash(tc))
        rh.append(K.text_hash(tr))
    return pa.RecordBatch.from_arrays(
        [batch.column("pair_id"), pa.array(ph, K.TEXT_HASH), pa.array(ch, K.TEXT_HASH),
         pa.array(rh, K.TEXT_HASH), pa.array(K.row_phashes(batch), pa.list_(pa.uint64()))],
        schema=KEY_SCHEMA)


def text_source(datasets: list[D.Dataset], with_responses: bool,
                batch_size: int = 512) -> Any:
    """`texts(missing)` for `ensure_embeddings`: streams the inputs' texts again."""
    cols = ["prompt", "chosen", "rejected"] if with_responses else ["prompt"]

    def texts(missing: np.ndarray) -> Iterator[tuple[bytes, str]]:
        for batch in D.iter_inputs(datasets, columns=cols, batch_size=batch_size):
            values = [batch.column(c).to_pylist() for c in cols]
            for row in zip(*values, strict=True):
                prompt = K.prompt_view(row[0])
                yield K.text_hash(prompt), prompt
                for t in row[1:]:
                    yield K.text_hash(t or ""), t or ""

    return texts


# -- the global step ---------------------------------------------------------------------
def _round(x: np.ndarray) -> np.ndarray:
    """Cosines rounded to 4 decimals and clipped to [-1, 1] (float16 storage can add 1e-4)."""
    return np.clip(np.round(x.astype(np.float64), ROUND), -1.0, 1.0).astype(np.float32)


def _images_match(a: list[int] | None, b: list[int] | None, radius: int) -> bool:
    if a is None or b is None or len(a) != len(b):
        return False
    return all((x ^ y).bit_count() <= radius for x, y in zip(a, b, strict=True))


def _image_pairs(phashes: list[list[int] | None], radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) whose first images are within `radius` bits (then verified whole)."""
    from curate.index.hamming import radius_pairs

    rows = np.array([i for i, p in enumerate(phashes) if p], dtype=np.int64)
    if len(rows) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    codes = np.array([phashes[i][0] for i in rows], dtype=np.uint64)  # rows: phashes not None
    i, j, _ = radius_pairs(codes, radius)
    return rows[i], rows[j]


@dataclass
class _Groups:
    labels: np.ndarray  # per row: the smallest row of its group
    edges: int


def group_rows(text_of_row: np.ndarray, edge_a: np.ndarray, edge_b: np.ndarray,
               phashes: list[list[int] | None], image_distance: int) -> _Groups:
    """Union-find over rows: same prompt text or a prompt edge, and matching images."""
    from curate.index.unionfind import UnionFind

    n = len(text_of_row)
    uf = UnionFind(n)
    has_img = np.array([bool(p) for p in phashes], dtype=bool)
    no_img = np.array([p is not None and len(p) == 0 for p in phashes], dtype=bool)
    # rows without images: one group per text, texts joined by edges
    first_plain: dict[int, int] = {}
    for r in np.flatnonzero(no_img).tolist():
        t = int(text_of_row[r])
        if t in first_plain:
            uf.union(first_plain[t], r)
        else:
            first_plain[t] = r
    linked = 0
    for a, b in zip(edge_a.tolist(), edge_b.tolist(), strict=True):
        if a in first_plain and b in first_plain:
            uf.union(first_plain[a], first_plain[b])
            linked += 1
    # rows with images: candidate image pairs, kept where the texts are the same or linked
    if has_img.any():
        edge_set = set(zip(edge_a.tolist(), edge_b.tolist(), strict=True))
        ri, rj = _image_pairs(phashes, image_distance)
        for i, j in zip(ri.tolist(), rj.tolist(), strict=True):
            ti, tj = int(text_of_row[i]), int(text_of_row[j])
            if ti != tj and (min(ti, tj), max(ti, tj)) not in edge_set:
                continue
            if _images_match(phashes[i], phashes[j], image_distance):
                uf.union(i, j)
                linked += 1
    return _Groups(uf.labels(), linked)


def decide(keys: pa.Table, cfg: SimilarConfig, embed: EmbedSettings,
           datasets: list[D.Dataset], out: Path, engine: Engine | None = None) -> Decisions:
    n = keys.num_rows
    if n == 0:
        return Decisions(empty_decisions(SCORE_FIELDS))
    pair_ids = keys["pair_id"].to_pylist()
    ph = hashes_to_numpy(keys["prompt_hash"])
    with_resp = cfg.response_threshold <= 1.0
    ch = hashes_to_numpy(keys["chosen_hash"]) if with_resp else np.empty(0, "S16")
    rh = hashes_to_numpy(keys["rejected_hash"]) if with_resp else np.empty(0, "S16")
    phashes = keys["phashes"].to_pylist()
    folders = _embedding_folders(datasets, out)
    # the prompts' vectors come here (float16: the stored values, half the memory of
    # float32) for the global kNN; the responses' cosine is computed in the map step
    table, key = ensure_embeddings(ph, text_source(datasets, False), embed, folders,
                                   engine=engine, dtype=STORE_DTYPE)
    rc = None
    if with_resp:
        rc = response_cosines(ch, rh, response_rows(datasets), embed, key, table, folders,
                              engine, spill_dir=_spill_dir(out))
    stats = _embedding_stats(table, rc)

    reason: list[str | None] = [None] * n
    detail: list[str | None] = [None] * n
    resp_sim = np.full(n, np.nan, dtype=np.float32)
    if rc is not None:
        resp_sim = _round(rc.cosines)
        for r in np.flatnonzero(resp_sim >= cfg.response_threshold).tolist():
            reason[r] = "responses_too_similar"
            detail[r] = f"chosen and rejected responses have cosine {resp_sim[r]:.4f}"

    uniq, text_of_row = np.unique(ph, return_inverse=True)
    vecs = table.vectors  # the table holds exactly the unique prompts, sorted as `uniq`
    assert np.array_equal(table.hashes, uniq)
    nb = dense.knn(vecs, cfg.k, exact_max=cfg.exact_max, nprobe=cfg.nprobe) if len(uniq) \
        else dense.Neighbours(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32), "none")
    nb = dense.Neighbours(nb.ids, _round(nb.sims), nb.method)
    ea, eb, _ = dense.pairs_above(nb, cfg.threshold)
    groups = group_rows(text_of_row, ea, eb, phashes, cfg.image_distance)

    # representative: the first row of each group not already rejected for its responses
    rep_of_label: dict[int, int] = {}
    for r in range(n):
        lab = int(groups.labels[r])
        if reason[r] is None and lab not in rep_of_label:
            rep_of_label[lab] = r
    group_id: list[str] = [pair_ids[r] for r in range(n)]
    for r in range(n):
        rep = rep_of_label.get(int(groups.labels[r]))
        if rep is None:
            continue
        group_id[r] = pair_ids[rep]
        if rep != r and reason[r] is None:
            a, b = vecs[text_of_row[r]], vecs[text_of_row[rep]]
            sim = float(_round(np.array([a.astype(np.float32) @ b.astype(np.float32)]))[0])
            reason[r] = "similar_prompt"
            detail[r] = f"{pair_ids[rep]} (prompt cosine {sim:.4f})"

    max_sim, match = _nearest_other_row(text_of_row, nb, pair_ids)
    decisions = pa.table({
        "pair_id": keys["pair_id"],
        "reject_reason": pa.array(reason, pa.string()),
        "reject_detail": pa.array(detail, pa.string()),
        "similar_prompt_sim": pa.array(max_sim, pa.float32()),
        "similar_prompt_match": pa.array(match, pa.string()),
        "similar_response_sim": pa.array(resp_sim, pa.float32(), from_pandas=True),
        "similar_group": pa.array(group_id, pa.string()),
    })
    extra = {
        "embeddings": {**stats, "key": key,
                       "file": f"embeddings/{key}/part-00000.parquet"},
        "neighbours": {"method": nb.method, "k": cfg.k, "unique_prompts": int(len(uniq)),
                       "prompt_edges": int(len(ea)), "row_links": groups.edges},
    }
    return Decisions(decisions, extra, write_files=_embedding_writer(table, key, rc))


def _spill_dir(out: Path) -> Path | None:
    """Response vectors wait on disk beside the output (same disk as it will take)."""
    if D.is_uri(out):
        return None
    parent = Path(out).resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def response_rows(datasets: list[D.Dataset], batch_size: int = 4096) -> Any:
    """The rows' (chosen, rejected) texts again, in input order, for `response_cosines`."""

    def rows() -> Iterator[tuple[list[Any], list[Any]]]:
        for batch in D.iter_inputs(datasets, columns=["chosen", "rejected"],
                                   batch_size=batch_size):
            yield batch.column("chosen").to_pylist(), batch.column("rejected").to_pylist()

    return rows


def _embedding_stats(prompts: EmbeddingTable, rc: ResponseCosines | None) -> dict[str, Any]:
    """The prompts' and the responses' embedding stats as one, as before: unique texts
    (prompts and responses together), how many came from the store, how many were
    computed this run; the responses' own counts under `responses`."""
    st = dict(prompts.stats)
    if rc is None:
        return st
    unique = int(len(np.union1d(prompts.hashes, rc.unique)))
    from_store = int(len(np.union1d(prompts.stored, rc.found)))
    st.update({"unique_texts": unique, "from_store": from_store,
               "computed": unique - from_store,
               "model_loaded": bool(st.get("model_loaded") or rc.stats["model_loaded"]),
               "responses": {k: v for k, v in rc.stats.items() if k != "model"}})
    if "model" not in st and "model" in rc.stats:
        st["model"] = rc.stats["model"]
    return st


def _nearest_other_row(text_of_row: np.ndarray, nb: dense.Neighbours,
                       pair_ids: list[str]) -> tuple[np.ndarray, list[str | None]]:
    """Per row: cosine to the most similar prompt of another row, and that row's id."""
    n = len(text_of_row)
    if n == 0:
        return np.zeros(0, np.float32), []
    counts = np.bincount(text_of_row, minlength=len(nb.ids))
    first_row = np.full(len(nb.ids), -1, dtype=np.int64)
    second_row = np.full(len(nb.ids), -1, dtype=np.int64)
    for r in range(n):
        t = text_of_row[r]
        if first_row[t] < 0:
            first_row[t] = r
        elif second_row[t] < 0:
            second_row[t] = r
    other_t, other_s = dense.best_other(nb)
    sims = np.empty(n, dtype=np.float32)
    match: list[str | None] = []
    for r in range(n):
        t = text_of_row[r]
        if counts[t] > 1:  # the same text in another row
            sims[r] = 1.0
            m = first_row[t] if first_row[t] != r else second_row[t]
            match.append(pair_ids[m])
        elif other_t[t] >= 0:
            sims[r] = other_s[t]
            match.append(pair_ids[first_row[other_t[t]]])
        else:
            sims[r] = np.nan
            match.append(None)
    return sims, match


def _embedding_folders(datasets: list[D.Dataset], out: Path) -> list[Path]:
    """Where stored vectors may already be: the inputs' and the old output's embeddings/."""
    folders = [Path(d.path) / "embeddings" for d in datasets
               if getattr(d, "filesystem", None) is None]
    if not D.is_uri(out) and (Path(out) / "embeddings").is_dir():
        folders.append(Path(out) / "embeddings")
    return folders


def _embedding_writer(table: EmbeddingTable, key: str,
                      responses: ResponseCosines | None = None) -> Any:
    """Writes `embeddings/<key>/part-00000.parquet`: `table`'s vectors and, for similar,
    the response vectors waiting on disk (never all in memory)."""
    from curate.models.pair_cosine import write_vectors

    def write(folder: Path) -> None:
        extra = responses.vectors if responses is not None else None
        try:
            if len(table.hashes) or extra is not None:
                write_vectors(Path(folder) / "embeddings" / key / "part-00000.parquet",
                              table, extra, {"key": key})
        finally:
            if responses is not None and responses.keep is not None:
                responses.keep.cleanup()

    return write


def run(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
        cfg: SimilarConfig, *, engine: Engine | None = None, force: bool = False) -> Manifest:
    """Run `curate similar` over the kept rows of `inputs` into `out`; returns the manifest."""
    from curate.engine import get_engine
    from curate.models.embedder import default_cache

    embed = cfg.embed or EmbedSettings(cache=default_cache(inputs))
    engine = engine or get_engine("local")
    datasets = [D.Dataset.open(p) for p in inputs]
    schema = D.unified_schema(datasets)
    columns = ["pair_id", "prompt", "chosen", "rejected", *K.image_columns(schema)]
    full_cfg = {**recorded(cfg), **embed.config()}
    return run_filter_stage(
        STAGE, inputs, out, full_cfg, annotate=annotate, annotate_columns=columns,
        decide=lambda keys: decide(keys, cfg, embed, datasets, Path(out), engine),
        engine=engine, force=force, batch_size=cfg.batch_size,
    )


def similar(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
            config: SimilarConfig | None = None, engine: Engine | None = None,
            force: bool = False, **options: Any) -> Manifest:
    """`run` with `config` (default: SimilarConfig()) and SimilarConfig's fields as keywords."""
    return run(inputs, out, configured(SimilarConfig, config, options), engine=engine,
               force=force)


register_stage(STAGE, 30, filter=True, run=run, config=SimilarConfig)
