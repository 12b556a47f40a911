"""Dataset folders: `kept/*.parquet`, `rejected/*.parquet` and `manifest.json`.

A folder is complete only when its manifest exists; writers build the whole
folder beside the target and rename it into place at the end (atomic commit).

A folder may also be a pyarrow filesystem URI (`file://`, `s3://`, `gs://`, ...):
readers go through the filesystem; writers build the folder in a local staging
folder and upload it at the end, data files first and the manifest last, so a
folder with a manifest is complete there too.

The package's modules, lowest first: `layout` (names), `errors`, `checksums`, `uris`,
`folder_manifest`, `commit` (the output rule and the atomic commit), `reading`
(`Dataset`, verified reads), `writing` (part files). Import the names from here.
"""

from __future__ import annotations

from curate.dataset.checksums import (
    HashingSink,
    checksum_files,
    file_sizes,
    fingerprint_file,
    json_fingerprint,
    sha256_file,
)
from curate.dataset.commit import (
    check_no_overlap,
    check_output,
    check_replaceable,
    commit,
    recover_interrupted_commit,
    stale_temp_folders,
    temp_folder_for,
)
from curate.dataset.errors import (
    ChangedInputError,
    ConservationError,
    DatasetError,
    RemoteError,
    UnsafeOutputError,
)
from curate.dataset.folder_manifest import (
    is_curate_manifest,
    parse_manifest,
    read_manifest,
    write_manifest,
)
from curate.dataset.layout import (
    DEFAULT_BYTES_PER_FILE,
    DEFAULT_ROWS_PER_FILE,
    KEPT,
    MANIFEST,
    REJECTED,
)
from curate.dataset.reading import (
    Dataset,
    VerifyingFile,
    bytes_per_row,
    conform,
    iter_inputs,
    open_parquet,
    unified_schema,
)
from curate.dataset.uris import (
    check_output_uri,
    is_uri,
    location,
    redact,
    resolve_uri,
)
from curate.dataset.writing import (
    PartWriter,
    dictionary_columns,
    file_size,
    open_output,
    parquet_compression,
    write_parquet_hashed,
)

__all__ = [
    "bytes_per_row",
    "ChangedInputError",
    "check_no_overlap",
    "check_output",
    "check_output_uri",
    "check_replaceable",
    "checksum_files",
    "commit",
    "conform",
    "ConservationError",
    "Dataset",
    "DatasetError",
    "DEFAULT_BYTES_PER_FILE",
    "DEFAULT_ROWS_PER_FILE",
    "dictionary_columns",
    "file_size",
    "file_sizes",
    "fingerprint_file",
    "HashingSink",
    "is_curate_manifest",
    "is_uri",
    "iter_inputs",
    "json_fingerprint",
    "KEPT",
    "location",
    "MANIFEST",
    "open_output",
    "open_parquet",
    "parquet_compression",
    "parse_manifest",
    "PartWriter",
    "read_manifest",
    "recover_interrupted_commit",
    "redact",
    "REJECTED",
    "RemoteError",
    "resolve_uri",
    "sha256_file",
    "stale_temp_folders",
    "temp_folder_for",
    "unified_schema",
    "UnsafeOutputError",
    "VerifyingFile",
    "write_manifest",
    "write_parquet_hashed",
]
