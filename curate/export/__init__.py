"""Training-framework formats written by `curate shard --format NAME`.

Each module registers its format (see `curate.export.base`); importing this package
imports them all, so a new format is one module.
"""

from __future__ import annotations

from curate.export.base import EXPORTERS, Exporter, formats, formats_help, get_exporter, register
from curate.registry import import_submodules

import_submodules(__name__)

__all__ = ["EXPORTERS", "Exporter", "formats", "formats_help", "get_exporter", "register"]
