"""The raw row and the file-level error every reader shares: below the readers, so the
file readers (readers.py) and the Hugging Face ones (hf_local.py, hub.py) that it
dispatches to all import them from here, not from each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class InputError(Exception):
    """A file that cannot be read at all; the CLI turns it into exit code 2."""


@dataclass(frozen=True)
class Record:
    """One raw row and where it came from (`where` is 'file:line' or 'file:row').

    `problem` says why a row the file holds cannot be a record (a JSON line that is not
    an object, or nested too deep to parse): the adapter boundary rejects it
    (`malformed_row`) and `data` keeps what could be kept of it.
    """

    data: dict[str, Any]
    file: str
    index: int  # 1-based line (json lines) or 0-based row (others)
    problem: str | None = None

    @property
    def where(self) -> str:
        # a file name that is not UTF-8 holds surrogates (surrogateescape): shown escaped
        return f"{self.file}:{self.index}".encode("utf-8", "backslashreplace").decode("utf-8")
