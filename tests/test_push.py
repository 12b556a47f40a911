"""`curate push DIR REPO_ID`: the Hub calls it makes (a stand-in HfApi records them; no
network here) and its exit-2 failures: offline, not logged in, unreachable, refused,
not a dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curate.engine import get_engine
from curate.stages.ingest import ingest
from tests.helpers import write_parquet


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = write_parquet(tmp_path / "src.parquet", [
        {"prompt": f"q{i}", "chosen": "a", "rejected": "b" if i else "a"} for i in range(4)])
    ingest("generic", [str(src)], tmp_path / "ds", engine=get_engine("local", workers=1))
    return tmp_path / "ds"


class FakeApi:
    """Records the calls `curate push` makes; `fail` is raised by create_repo."""

    calls: list[tuple[str, dict[str, Any]]] = []
    fail: BaseException | None = None

    def create_repo(self, repo_id: str, **kw: Any) -> str:
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        if FakeApi.fail is not None:
            raise FakeApi.fail
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, **kw: Any) -> Any:
        FakeApi.calls.append(("upload_folder", kw))
        files = sorted(p.relative_to(kw["folder_path"]).as_posix()
                       for p in Path(kw["folder_path"]).rglob("*") if p.is_file())
        FakeApi.calls.append(("files", {"files": files}))
        return type("Info", (), {"commit_url": f"https://huggingface.co/datasets/"
                                               f"{kw['repo_id']}/commit/abc"})()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> type[FakeApi]:
    import huggingface_hub

    FakeApi.calls, FakeApi.fail = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return FakeApi


def test_push_creates_the_dataset_repo_and_uploads_the_folder(folder: Path, hub, run_cli) -> None:
    res = run_cli("push", folder, "me/pairs", "--private")
    create, upload, files = hub.calls
    assert create == ("create_repo", {"repo_id": "me/pairs", "repo_type": "dataset",
                                      "private": True, "exist_ok": True})
    assert upload[1]["folder_path"] == str(folder) and upload[1]["repo_type"] == "dataset"
    assert upload[1]["repo_id"] == "me/pairs"
    assert upload[1]["commit_message"] == "curate ingest output: 3 kept, 1 rejected"
    assert "README.md" in files[1]["files"] and "manifest.json" in files[1]["files"]
    assert "commit/abc" in res.output


def test_push_writes_the_card_of_a_folder_that_has_none(folder: Path, hub, run_cli) -> None:
    (folder / "README.md").unlink()  # a folder written before stages wrote cards
    run_cli("push", folder, "me/pairs")
    assert (folder / "README.md").read_text().startswith("---\nconfigs:\n")


def test_push_offline_exits_2_before_any_call(folder: Path, hub, run_cli,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_cli("push", folder, "me/pairs", expect=2)
    assert "offline mode is on" in res.output and hub.calls == []


def test_push_not_logged_in_exits_2(folder: Path, hub, run_cli,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    res = run_cli("push", folder, "me/pairs", expect=2)
    assert "not logged in" in res.output and "hf auth login" in res.output
    assert hub.calls == []


def test_push_unreachable_or_refused_exits_2(folder: Path, hub, run_cli) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    hub.fail = ConnectionError("Failed to resolve 'huggingface.co'")
    res = run_cli("push", folder, "me/pairs", expect=2)
    assert "could not reach the Hugging Face Hub" in res.output
    assert "Traceback" not in res.output

    class Response:  # what HfHubHTTPError reads from a response
        status_code = 401
        headers: dict[str, str] = {}
        request = None
        url = "https://huggingface.co/api/repos/create"

    hub.fail = HfHubHTTPError("401 Client Error: Unauthorized", response=Response())
    res = run_cli("push", folder, "me/pairs", expect=2)
    assert "refused it (HTTP 401)" in res.output


def test_push_needs_a_dataset_folder(tmp_path: Path, hub, run_cli) -> None:
    (tmp_path / "notes").mkdir()
    res = run_cli("push", tmp_path / "notes", "me/pairs", expect=2)
    assert "manifest.json" in res.output and hub.calls == []
