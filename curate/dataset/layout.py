"""A dataset folder's layout: `kept/` and `rejected/` parquet files and `manifest.json`."""

from __future__ import annotations

MANIFEST = "manifest.json"


KEPT = "kept"


REJECTED = "rejected"


DEFAULT_ROWS_PER_FILE = 50_000


DEFAULT_BYTES_PER_FILE = 256 * 1024 * 1024
