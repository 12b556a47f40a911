"""The errors a dataset folder raises: each names the folder or file and what to do."""

from __future__ import annotations


class ConservationError(AssertionError):
    """rows in != rows kept + rows rejected: a stage lost or invented rows."""


class DatasetError(RuntimeError):
    """A folder is not a usable dataset folder."""


class UnsafeOutputError(DatasetError):
    """An output would replace a user's files or overlap an input."""


class ChangedInputError(DatasetError):
    """A dataset folder's data file no longer matches its manifest (edited, truncated,
    removed or added after the folder was written)."""


class RemoteError(DatasetError, OSError):
    """A folder URI's filesystem failed (unreachable, no such bucket, access denied): the
    message names the URI; an OSError still, for callers that catch those."""
