"""Finished samples on disk: a killed `curate generate` resumes without redoing them.

One append-only JSON-lines file per model fingerprint under the cache folder; each
line is one finished sample keyed by (model fingerprint, request key, sampling
parameters, seed, sample index). Lines are appended and flushed as samples finish,
so a kill loses at most the batch in flight; a torn last line is ignored on reading.
Failed samples are never cached: a rerun tries them again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from curate.generation.requests import Job, Sample, SamplingParams


def default_generation_cache() -> Path:
    """`$CURATE_CACHE/generate`, else `~/.cache/curate/generate`."""
    env = os.environ.get("CURATE_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "curate") / "generate"


class GenerationCache:
    """Samples by key, loaded from and appended to `folder/<fingerprint>.jsonl`."""

    def __init__(self, folder: str | os.PathLike[str], model_fingerprint: str,
                 sampling: SamplingParams) -> None:
        self.model_fingerprint = model_fingerprint
        params = {k: v for k, v in sampling.to_dict().items() if k != "n"}
        self._prefix = json.dumps([model_fingerprint, params], sort_keys=True)
        name = hashlib.sha256(model_fingerprint.encode()).hexdigest()[:24]
        self.path = Path(folder) / f"{name}.jsonl"
        self._samples: dict[str, dict[str, Any]] = {}
        self._fh: Any = None
        self.hits = 0
        if self.path.is_file():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self._samples[entry["key"]] = entry["sample"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line torn by a kill

    def key(self, job: Job) -> str:
        payload = f"{self._prefix}\0{job.request.key}\0{job.seed}\0{job.index}"
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get(self, job: Job) -> Sample | None:
        entry = self._samples.get(self.key(job))
        if entry is None:
            return None
        self.hits += 1
        return Sample(**entry)

    def add(self, job: Job, sample: Sample) -> None:
        if sample.error is not None:
            return
        key = self.key(job)
        self._samples[key] = sample.to_json()
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        self._fh.write(json.dumps({"key": key, "sample": sample.to_json()},
                                  ensure_ascii=False) + "\n")
        self._fh.flush()  # in the OS's hands: a killed process keeps it

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
