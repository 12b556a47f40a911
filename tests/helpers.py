"""Small builders shared by tests: images, raw files, and dataset-folder checks."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import dataset as D
from curate.engine import LocalEngine


def jpeg_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30),
               quality: int = 90, seed: int = 0) -> bytes:
    """A small JPEG with some texture (so perceptual hashes are not degenerate)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[:] = color
    arr += rng.integers(0, 40, size=arr.shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(mode: str = "RGBA", size: tuple[int, int] = (32, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def assert_conserved(folder: Path) -> dict[str, Any]:
    """rows_in = kept + rejected in the manifest, and the parquet files agree with it."""
    ds = D.Dataset.open(folder)
    m = ds.manifest
    kept, rejected = ds.count(D.KEPT), ds.count(D.REJECTED)
    assert m["rows_kept"] == kept
    assert m["rows_rejected"] == rejected
    consumed = m.get("inputs_consumed", {"kept": kept, "rejected": rejected})
    assert m["rows_in"] == consumed["kept"] + consumed["rejected"]
    assert sum(m["rejected_by_reason"].values()) == rejected
    reasons = ds.read(D.REJECTED, columns=["reject_reason"])["reject_reason"].to_pylist()
    assert all(reasons), "every rejected row has a reason"
    for name, sha in m["files"].items():
        assert D.sha256_file(folder / name) == sha, name
    return m


def rows(folder: Path, part: str = D.KEPT) -> list[dict[str, Any]]:
    return D.Dataset.open(folder).read(part).to_pylist()


# scheduling-dependent by design: the dedup manifest says images_decoded depends on how
# batches met worker processes (a per-process hash memo); everything else must agree
SCHEDULING_DEPENDENT = {("dedup", "images_decoded")}


# -- comparing two runs of a stage (engines, write paths) ---------------------------
def id_column(folder: Path) -> str:
    """`pair_id`, or `prompt_id` for a candidates folder."""
    return "pair_id" if "pair_id" in D.Dataset.open(folder).schema().names else "prompt_id"


def pair_ids(folder: Path, part: str) -> list[str]:
    col = id_column(folder)
    return sorted(D.Dataset.open(folder).read(part, columns=[col])[col].to_pylist())


def canonical_sha256(folder: Path, part: str) -> str:
    """sha256 of a part's rows sorted by every scalar column (file layout and order aside)."""
    table = D.Dataset.open(folder).read(part)
    order = ("pair_id", "prompt_id", "source", "source_id", "reject_reason", "reject_detail",
             "split")
    keys = [(c, "ascending") for c in order if c in table.column_names]
    table = table.take(pc.sort_indices(table, sort_keys=keys)).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def manifest_counts(folder: Path) -> dict[str, Any]:
    """The manifest minus what may differ between runs: engine, timings, paths, and the
    file layout (workers that write their own parts cut files elsewhere, so the folders'
    fingerprints, which cover their files, differ too)."""
    text = json.dumps(D.Dataset.open(folder).manifest)  # paths name the run's own folder
    m = json.loads(text.replace(str(folder.parent), "<run>"))
    drop = {"engine", "steps", "inputs", "files", "file_rows", "file_sizes"}
    out = _without_timings({k: v for k, v in m.items() if k not in drop})
    out = _without_key(out, "fingerprint")
    for stage, key in SCHEDULING_DEPENDENT:
        out.get(stage, {}).pop(key, None)
    return out


def _without_key(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return {k: _without_key(v, key) for k, v in obj.items() if k != key}
    if isinstance(obj, list):
        return [_without_key(v, key) for v in obj]
    return obj


def _without_timings(obj: Any) -> Any:
    """`obj` without the keys that hold timings (`seconds`, `embed_seconds`, ...) or rates
    (`tokens_per_second`, ...)."""
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items()
                if not k.endswith(("seconds", "_per_second"))}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def assert_same_output(a: Path, b: Path) -> None:
    for part in (D.KEPT, D.REJECTED):
        assert pair_ids(a, part) == pair_ids(b, part), part
        assert canonical_sha256(a, part) == canonical_sha256(b, part), part
    assert manifest_counts(a) == manifest_counts(b)
    assert_conserved(b)


def assert_same_files(a: Path, b: Path) -> None:
    """`a` and `b` hold the same files, byte for byte (the manifest and the dataset card
    aside: they record the engine and the timings)."""
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and str(p.relative_to(root)) not in ("manifest.json", "README.md")}

    got, want = files(b), files(a)
    assert sorted(got) == sorted(want) and any(n.startswith("trl/") for n in got)
    for name, data in want.items():
        assert got[name] == data, name


class WorkerWritesEngine(LocalEngine):
    """The local process pool, its workers writing their own parts as Ray's do: the Ray
    engine's code paths (curate.pipeline.fragment_writes, ingest_parts) in seconds."""

    writes_in_workers = True
