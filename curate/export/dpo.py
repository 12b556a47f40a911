"""`--format dpo`: the conversational preference layout TRL's `DPOTrainer` reads.

The rows are TRL's (see `curate.export.trl`): `prompt`, `chosen`, `rejected` as
messages, and for datasets with images typed content parts plus an `images` column of
`datasets` Images, the layout of `trl-lib/rlaif-v` and `HuggingFaceH4/rlaif-v_formatted`
that `DPOTrainer` takes for vision-language models, MPO included
(`DPOConfig(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0])`).
DPO data also keeps `chosen_score` / `rejected_score` (for `curate pairs` output: the
reward model's scores), so a training script can weight or filter pairs by margin.

    OUT/dpo/train-00000-of-00002.parquet ...  (one file per kept shard, same names)

    load_dataset("parquet", data_files={"train": "OUT/dpo/train-*.parquet"})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.export.base import register
from curate.export.trl import TrlExporter, trl_row

COLUMNS = ["pair_id", "prompt", "chosen", "rejected", "images"]
SCORE_COLUMNS = ["chosen_score", "rejected_score"]


@register
class DpoExporter(TrlExporter):
    """`OUT/dpo/<shard>.parquet`: TRL's rows plus the two score columns."""

    name = "dpo"

    def __init__(self, folder: Path, *, has_images: bool) -> None:
        from datasets import Features, Value

        super().__init__(folder, has_images=has_images)
        features = Features.from_arrow_schema(self.schema)
        for c in SCORE_COLUMNS:
            features[c] = Value("float64")
        self.schema = features.arrow_schema  # with the metadata `datasets` reads types from

    def write(self, split: str, shard: str, table: pa.Table) -> None:
        rows = [trl_row(r, self.has_images) | {c: r[c] for c in SCORE_COLUMNS}
                for r in table.select(COLUMNS + SCORE_COLUMNS).to_pylist()]
        pq.write_table(pa.Table.from_pylist(rows, schema=self.schema), self.folder / shard,
                       compression="zstd", row_group_size=1024)
        self.rows[shard] = len(rows)

    def close(self) -> dict[str, Any]:
        return {**super().close(), "data_files": {
            split: f"{self.folder.name}/{split}-*.parquet"
            for split in sorted({name.split("-", 1)[0] for name in self.rows})}}
