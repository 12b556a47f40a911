"""The canonical preference pair, pinned as one pyarrow schema.

Every stage reads and writes rows of this shape. Stages may append columns of
their own (hashes, scores, similarities) after the canonical ones; they never
change or drop a canonical column. Rejected rows carry three more columns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

IMAGE = pa.struct(
    [
        ("bytes", pa.binary()),
        ("sha256", pa.string()),  # of the encoded bytes
        ("pixel_hash", pa.string()),  # xxh3-128 of the decoded pixels: same picture, other file
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
    ]
)

PAIR_FIELDS: list[pa.Field] = [
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("prompt", pa.list_(MESSAGE)),
    pa.field("chosen", pa.string()),
    pa.field("rejected", pa.string()),
    pa.field("images", pa.list_(IMAGE)),
    pa.field("chosen_score", pa.float64()),
    pa.field("rejected_score", pa.float64()),
    pa.field("category", pa.string()),
    pa.field("meta", pa.string()),  # source-specific extras, JSON text
]
PAIR_SCHEMA = pa.schema(PAIR_FIELDS)
PAIR_COLUMNS = [f.name for f in PAIR_FIELDS]

REJECT_FIELDS: list[pa.Field] = [
    pa.field("reject_stage", pa.string()),
    pa.field("reject_reason", pa.string()),
    pa.field("reject_detail", pa.string()),
]
REJECT_COLUMNS = [f.name for f in REJECT_FIELDS]

# A prompt with N responses sampled from a policy model, before a reward model picks
# pairs among them (`curate ingest candidates`, read by `curate pairs`). Same message
# and image types as a pair; `prompt_id` plays the role of `pair_id`.
CANDIDATES_FIELDS: list[pa.Field] = [
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("prompt", pa.list_(MESSAGE)),
    pa.field("responses", pa.list_(pa.string())),
    pa.field("images", pa.list_(IMAGE)),
    pa.field("model", pa.string()),  # the policy model that sampled the responses
    pa.field("category", pa.string()),
    pa.field("meta", pa.string()),
]
CANDIDATES_SCHEMA = pa.schema(CANDIDATES_FIELDS)


class SchemaError(ValueError):
    """A table does not have the canonical columns with the canonical types."""


def validate(schema: pa.Schema, *, rejected: bool = False, base: pa.Schema = PAIR_SCHEMA) -> None:
    """Raise SchemaError unless `schema` starts with the canonical columns, typed as pinned."""
    required = list(base)
    if rejected:
        required += REJECT_FIELDS
    for field in required:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise SchemaError(f"missing column {field.name!r}")
        got = schema.field(idx).type
        if not got.equals(field.type):
            raise SchemaError(f"column {field.name!r} has type {got}, expected {field.type}")


def compute_pair_id(
    source: str,
    source_id: str,
    prompt: Sequence[dict[str, Any]] | None,
    chosen: str | None,
    rejected: str | None,
    image_hashes: Sequence[str] = (),
) -> str:
    """A stable content hash of one row: same source row, same id, on any machine."""
    payload = json.dumps(
        [source, source_id, list(prompt or []), chosen, rejected, list(image_hashes)],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def empty_table(schema: pa.Schema = PAIR_SCHEMA) -> pa.Table:
    return schema.empty_table()


def with_reject_columns(schema: pa.Schema) -> pa.Schema:
    """`schema` plus the reject columns (idempotent)."""
    for field in REJECT_FIELDS:
        if schema.get_field_index(field.name) < 0:
            schema = schema.append(field)
    return schema


def reject_rows(
    batch: pa.RecordBatch | pa.Table,
    reasons: Sequence[str] | pa.Array,
    details: Sequence[str | None] | pa.Array | None,
    stage: str,
) -> pa.Table:
    """`batch` as rejected rows: with `reject_stage`, `reject_reason` and `reject_detail`
    (replacing any)."""
    n = batch.num_rows
    reasons_arr = pa.array(reasons, type=pa.string())
    details_arr = pa.array(details if details is not None else [None] * n, type=pa.string())
    if len(reasons_arr) != n or len(details_arr) != n:
        raise ValueError("one reason and one detail per rejected row")
    if reasons_arr.null_count:
        raise ValueError("every rejected row needs a reason")
    tbl = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    tbl = tbl.drop_columns([c for c in REJECT_COLUMNS if c in tbl.column_names])
    tbl = tbl.append_column("reject_stage", pa.array([stage] * n, type=pa.string()))
    tbl = tbl.append_column("reject_reason", reasons_arr)
    return tbl.append_column("reject_detail", details_arr)
