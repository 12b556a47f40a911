"""The dataset card (`README.md`) of a dataset folder, so `datasets.load_dataset(FOLDER)`
and a Hugging Face Hub upload of the folder work as they are.

A folder's `kept/` and `rejected/` have different schemas (rejected rows carry
`reject_stage`, `reject_reason`, `reject_detail`), so `datasets` cannot infer one
dataset from all its parquet files. The card's YAML `configs:` block (the Hub's
"manual configuration", huggingface.co/docs/hub/datasets-manual-configuration) names
them: `kept` (the default config), `rejected`, and for a shard folder the kept
config's `train` / `eval` splits plus one config per parquet export subset
(`trl_text`, `trl_vision`, `dpo_text`, `dpo_vision`). Only patterns that match files
holding rows are written: `datasets` refuses a pattern that matches nothing and a
split with no rows (so a folder with no rejected rows has no `rejected` config). The
JSON exports (`llamafactory/`, `mpo/`) are not configs: `datasets` picks one file
format for all of a folder's configs, and their consumers read them with their own
loaders.

The card is a view of the manifest (`render` is a pure function of it, plus the
upstream manifests `lineage` finds for the eval sets the rows were decontaminated
against), written after the manifest's `files` checksums are taken: it is
documentation, not data, so it is NOT in `files`. Editing or regenerating it never
invalidates the folder, and the folder's fingerprint (the hash of `files`) does not
change when the card's wording does. It holds no timings and no output path, so the
same input and config give the same card.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CARD = "README.md"
MAX_LINEAGE = 64  # manifests read when walking the inputs upstream


def _has_rows(manifest: Mapping[str, Any], pattern: str) -> bool:
    """Does a file the manifest lists match `pattern` and hold rows? (`file_rows` counts
    kept/ and rejected/ files; an export writes no file without rows.)"""
    rows = manifest.get("file_rows") or {}
    return any(rows.get(f, 1) > 0 for f in manifest.get("files", {})
               if fnmatch.fnmatchcase(f, pattern))


def _config(name: str, splits: dict[str, str],
            manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """One `configs:` entry with the splits that have rows, `train` first."""
    order = sorted(splits, key=lambda s: (s != "train", s))
    data = [{"split": s, "path": splits[s]} for s in order if _has_rows(manifest, splits[s])]
    return {"config_name": name, "data_files": data} if data else None


def configs(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The YAML `configs:` entries of a folder, `kept` first and default."""
    kept_splits = manifest.get("data_files") or {"train": "kept/*.parquet"}
    out = [_config("kept", kept_splits, manifest),
           _config("rejected", {"train": "rejected/*.parquet"}, manifest)]
    for name, summary in sorted((manifest.get("exports") or {}).items()):
        for kind, sub in sorted((summary.get("subsets") or {}).items()):
            out.append(_config(f"{name}_{kind}", sub.get("data_files", {}), manifest))
    entries = [c for c in out if c is not None]
    if entries and entries[0]["config_name"] == "kept":
        entries[0] = {"config_name": "kept", "default": True,
                      "data_files": entries[0]["data_files"]}
    return entries


def eval_sets(manifest: Mapping[str, Any], upstream: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """Paths of the eval sets this folder's rows were decontaminated against, by this
    stage or by any stage upstream."""
    found: list[str] = []
    for m in [manifest, *upstream]:
        if m.get("stage") != "decontam":
            continue
        for e in (m.get("config") or {}).get("against") or []:
            path = e.get("path") if isinstance(e, dict) else str(e)
            if path and path not in found:
                found.append(path)
    return found


def _yaml(entries: list[dict[str, Any]], stage: str) -> str:
    import yaml

    meta = {"configs": entries, "tags": ["curate", f"curate-{stage}"]}
    return yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)


def render(manifest: Mapping[str, Any], upstream: Iterable[Mapping[str, Any]] = ()) -> str:
    """The card's text for `manifest` (see the module docstring)."""
    upstream = list(upstream)
    stage = str(manifest.get("stage", "?"))
    entries = configs(manifest)
    lines = ["---", _yaml(entries, stage).rstrip("\n"), "---", "",
             f"# curate `{stage}` output", "",
             f"Written by curate {manifest.get('version', '?')}, stage `{stage}`. "
             "Every input row is in `kept/` or in `rejected/` (with `reject_stage`, "
             "`reject_reason`, `reject_detail`); `manifest.json` has the full config, the "
             "input fingerprints and every file's sha256.", "",
             "| rows in | kept | rejected |", "|---:|---:|---:|",
             f"| {manifest.get('rows_in', 0):,} | {manifest.get('rows_kept', 0):,} | "
             f"{manifest.get('rows_rejected', 0):,} |", ""]
    reasons = manifest.get("rejected_by_reason") or {}
    if reasons:
        lines += ["## Rejected by reason", "", "| reason | rows |", "|---|---:|"]
        lines += [f"| `{k}` | {v:,} |" for k, v in sorted(reasons.items())] + [""]
    splits = manifest.get("splits") or {}
    if splits:
        lines += ["## Splits", "", "| split | rows | with images |", "|---|---:|---:|"]
        lines += [f"| {s} | {v.get('rows', 0):,} | {v.get('multimodal_rows', 0):,} |"
                  for s, v in splits.items()] + [""]
    lines += ["## Load", "", "```python", "from datasets import load_dataset", ""]
    for c in entries:
        arg = "" if c.get("default") else f', "{c["config_name"]}"'
        lines.append(f'load_dataset("FOLDER"{arg})  # {c["config_name"]}: '
                     + ", ".join(d["path"] for d in c["data_files"]))
    lines += ["```", ""]
    if not any(c["config_name"] == "rejected" for c in entries):
        lines += ["No rows were rejected: there is no `rejected` config.", ""]
    json_exports = sorted(set(manifest.get("exports") or {}) & {"llamafactory", "mpo"})
    if json_exports:
        lines += [f"`{n}/` is for its trainer's own loader (see `manifest.json`'s `exports`), "
                  "not a config." for n in json_exports] + [""]
    inputs = manifest.get("inputs") or []
    if inputs:
        lines += ["## Inputs", ""]
        for i in inputs:
            what = f" (`{i['stage']}` output)" if i.get("stage") else ""
            lines.append(f"- `{i.get('path', '?')}`{what}, fingerprint "
                         f"`{str(i.get('fingerprint', '?'))[:16]}`")
        lines.append("")
    evals = eval_sets(manifest, upstream)
    lines += ["## Decontaminated against", ""]
    lines += ([f"- `{p}`" for p in evals] if evals
              else ["No eval set: no `curate decontam` stage upstream of this folder."])
    lines += ["", "## Config", "", "```json",
              json.dumps(manifest.get("config", {}), indent=2, sort_keys=True, default=str),
              "```", ""]
    return "\n".join(lines)


def lineage(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The manifests upstream of `manifest` that still match the fingerprints its inputs
    recorded (a moved, deleted or rewritten input is left out), nearest first."""
    from curate import dataset as D

    found: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    todo = list(manifest.get("inputs") or [])
    while todo and len(seen) < MAX_LINEAGE:
        rec = todo.pop(0)
        path = rec.get("path")
        if not path or path in seen or str(path).startswith("hf://"):  # a hub input: no card
            continue
        seen.add(path)
        try:
            up = D.read_manifest(D.location(path))
        except Exception:  # noqa: BLE001 - an unreadable upstream is only left off the card
            continue
        if up is None or D.json_fingerprint(up.get("files", {})) != rec.get("fingerprint"):
            continue
        found.append(up)
        todo += list(up.get("inputs") or [])
    return found


def write_card(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write `folder/README.md` for `manifest` (call it after the checksums are taken)."""
    from curate.dataset import redact

    path = Path(folder) / CARD
    path.write_text(redact(render(manifest, lineage(manifest))), encoding="utf-8")
    return path
