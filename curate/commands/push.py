"""`curate push`: upload a dataset folder to the Hugging Face Hub as a dataset repo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import UsageFailure, handle_errors
from curate.commands.options import QuietOpt

_TRUE = {"1", "on", "yes", "true"}


def _offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as `huggingface_hub` reads it, read now."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "")
    return env.strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What a failed Hub call raises: HTTP errors (401, 403, 404, ...), the HTTP client's
    transport errors (no network, DNS, timeouts) and OS-level connection errors."""
    from huggingface_hub import errors

    found: list[type[BaseException]] = [errors.HfHubHTTPError, ConnectionError, OSError]
    base = getattr(errors, "HTTPError", None)  # the HTTP client's base error class
    if isinstance(base, type) and issubclass(base, BaseException):
        found.append(base)
    return tuple(found)


def push_folder(folder: Path, repo_id: str, *, private: bool = False,
                commit_message: str | None = None) -> str:
    """Upload the dataset folder `folder` to the Hub dataset repo `repo_id` (created if
    needed); returns the commit URL. Raises UsageFailure when it cannot."""
    from huggingface_hub import HfApi, get_token

    from curate import dataset as D
    from curate.pipeline.card import CARD, write_card

    ds = D.Dataset.open(folder)  # a complete dataset folder, or a DatasetError (exit 2)
    if ds.filesystem is not None:
        raise UsageFailure(f"{folder}: push uploads a local folder; copy it here first")
    if _offline():
        raise UsageFailure(f"cannot push {folder} to {repo_id}: offline mode is on "
                           "(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE); unset it and retry")
    if get_token() is None:
        raise UsageFailure(f"cannot push {folder} to {repo_id}: not logged in to the Hugging "
                           "Face Hub; run `hf auth login` or set HF_TOKEN")
    if not (ds.path / CARD).is_file():  # a folder written before cards existed
        write_card(ds.path, ds.manifest)
    manifest = ds.manifest
    message = commit_message or (f"curate {manifest.get('stage', '?')} output: "
                                 f"{manifest.get('rows_kept', 0)} kept, "
                                 f"{manifest.get('rows_rejected', 0)} rejected")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(ds.path), repo_id=repo_id,
                                 repo_type="dataset", commit_message=message,
                                 ignore_patterns=[".*", "**/.*"])
    except _hub_errors() as exc:
        raise UsageFailure(f"cannot push {folder} to {repo_id}: {_reason(exc)}") from exc
    return str(getattr(info, "commit_url", info))


def _reason(exc: BaseException) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return (f"the Hub refused it (HTTP {status}): log in with a token that can write "
                f"to this namespace (`hf auth login`) ({exc})")
    if status is not None:
        return f"the Hub answered HTTP {status} ({exc})"
    return f"could not reach the Hugging Face Hub; check the network ({exc})"


@handle_errors
def push(
    folder: Annotated[Path, typer.Argument(help="A dataset folder a curate stage wrote.")],
    repo_id: Annotated[str, typer.Argument(help="The Hub dataset repo, ORG/NAME.")],
    private: Annotated[bool, typer.Option(
        "--private", help="Create the repo private (an existing repo keeps its visibility)."
    )] = False,
    message: Annotated[str | None, typer.Option(
        "--message", "-m", help="The commit message (default: the stage and its counts).",
    )] = None,
    quiet: QuietOpt = False,
) -> None:
    """Upload a dataset folder to the Hugging Face Hub as a dataset repo.

    The folder's README.md (its dataset card, written by every stage) names the
    configs, so `load_dataset("ORG/NAME")` loads the kept rows and
    `load_dataset("ORG/NAME", "rejected")` the rejected ones. Needs network and a
    login (`hf auth login` or HF_TOKEN); exits 2 with the reason when either is missing.

    Example:
        curate push work/shards me/skywork-vl-pairs --private
    """
    url = push_folder(folder, repo_id, private=private, commit_message=message)
    if not quiet:
        from curate.progress import console

        console().print(f"pushed {folder} to {repo_id}: {url}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(push)

