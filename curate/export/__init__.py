"""Training-framework formats written by `curate shard --format NAME`.

Importing a format's module registers it (see `curate.export.base`).
"""

from __future__ import annotations

from curate.export import dpo, llamafactory, mpo, trl  # noqa: F401  (registers the formats)
from curate.export.base import Exporter, formats, get_exporter, register

__all__ = ["Exporter", "formats", "get_exporter", "register"]
