"""Hugging Face formats on disk: `Dataset.save_to_disk` folders and Arrow IPC files.

A `save_to_disk` folder holds `state.json`, `dataset_info.json` and `data-*.arrow`; a
`DatasetDict` folder holds `dataset_dict.json` and a folder per split. Both are read with
`datasets.load_from_disk` (the rows as stored: images stay {bytes, path}, undecoded). A
lone `.arrow` file is read as the Arrow IPC stream `datasets` writes (or an IPC file).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.sources.records import InputError, Record

SAVED_MARKERS = ("state.json", "dataset_dict.json")


def is_saved_dataset(folder: Path) -> bool:
    """Whether `folder` is a `save_to_disk` folder (a Dataset or a DatasetDict)."""
    return any((folder / m).is_file() for m in SAVED_MARKERS)


@dataclass(frozen=True)
class SavedDataset:
    """A `save_to_disk` folder given as an input; `split` picks a DatasetDict's split."""

    path: str
    split: str = "train"


def read_saved(spec: SavedDataset) -> Iterator[Any]:
    """The records of a `save_to_disk` folder, in order."""
    import datasets

    try:
        ds = datasets.load_from_disk(spec.path)
    except Exception as exc:
        raise InputError(f"{spec.path}: not a readable save_to_disk folder "
                         f"({type(exc).__name__}: {exc})") from exc
    label = spec.path
    if isinstance(ds, datasets.DatasetDict):
        if spec.split not in ds:
            raise InputError(f"{spec.path}: no split {spec.split!r}; it has "
                             f"{', '.join(ds)} (choose with --split)")
        ds, label = ds[spec.split], f"{spec.path}[{spec.split}]"
    i = 0
    for batch in ds.with_format("arrow").iter(batch_size=64):  # stored values, undecoded
        for row in batch.to_pylist():
            yield Record(row, label, i)
            i += 1


def read_arrow(path: str) -> Iterator[Any]:
    """The records of an Arrow IPC stream (as `datasets` writes) or IPC file."""
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
        try:
            reader: Any = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(k) for k in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        i = 0
        for batch in batches:
            for row in batch.to_pylist():
                yield Record(row, path, i)
                i += 1
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Arrow IPC stream or file ({exc})") from exc
