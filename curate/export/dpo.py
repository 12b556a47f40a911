"""`--format dpo`: the conversational preference layout TRL's `DPOTrainer` reads.

The rows are TRL's (see `curate.export.trl`), in the same two subsets: `dpo/text/`
(string contents) and `dpo/vision/` (typed content parts plus an `images` column of
`datasets` Images, the layout of `trl-lib/rlaif-v` and `HuggingFaceH4/rlaif-v_formatted`
that `DPOTrainer` takes for vision-language models, MPO included:
`DPOConfig(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0])`).
DPO data also keeps `chosen_score` / `rejected_score` (for `curate pairs` output: the
reward model's scores), so a training script can weight or filter pairs by margin.

    OUT/dpo/vision/train-00000-of-00002.parquet ...  (one file per kept shard and kind)

    load_dataset("parquet", data_files={"train": "OUT/dpo/vision/train-*.parquet"})
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curate.export.base import register
from curate.export.trl import TrlExporter

SCORE_COLUMNS = ["chosen_score", "rejected_score"]


@register
class DpoExporter(TrlExporter):
    """`OUT/dpo/{text,vision}/<shard>.parquet`: TRL's rows plus the two score columns."""

    name = "dpo"
    description = "TRL's DPOTrainer rows with the pair's scores, text/ and vision/ subsets"
    columns = (*TrlExporter.columns, *SCORE_COLUMNS)

    def schema(self, kind: str) -> pa.Schema:
        if kind not in self._schemas:
            from datasets import Features, Value

            features = Features.from_arrow_schema(super().schema(kind))
            for c in SCORE_COLUMNS:
                features[c] = Value("float64")
            self._schemas[kind] = features.arrow_schema  # with the metadata `datasets` reads
        return self._schemas[kind]

    def record(self, row: dict[str, Any], kind: str) -> dict[str, Any]:
        return super().record(row, kind) | {c: row[c] for c in SCORE_COLUMNS}
