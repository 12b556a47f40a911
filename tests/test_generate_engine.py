"""`curate generate --engine ray`: the transformers backend in engine actors, same output.

The driver plans, caches and writes; only each chunk's cache misses are generated in
the engine's actors, each with its own backend built from `TransformersBackend.spec()`.
The fast tests run that path on an in-process engine (the setup pickled as Ray would
ship it); the last on a real local Ray with two actors, against `--engine local`
(about 13 s on 2 busy cores, most of it Ray's start). Ray lives for this module only
(`ray_session`), never for the whole pytest session; without Ray that test skips.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from curate import dataset as D
from curate.dataset import read_manifest
from curate.generation.hf import TransformersBackend, TransformersSpec
from curate.stages.generate import generate
from tests.helpers import assert_conserved, assert_same_output
from tests.test_generate import SAMPLING, TINY, _dataset, _samples, _texts
from tests.test_generate import one_thread as one_thread  # noqa: F401 (autouse fixture)


class InProcessActors:
    """An engine with workers of its own, in this process: `setup` goes through pickle
    (as Ray ships it to actors) and is built once per 'actor'; items are dealt round
    robin, results in order. Counts what it was given."""

    name = "inproc"

    def __init__(self, actors: int = 2) -> None:
        self.actors = actors
        self.items: list[Any] = []

    def map_actors(self, setup: Callable[[], Callable[[Any], Any]],
                   items: Iterable[Any]) -> Iterator[Any]:
        fns = [pickle.loads(pickle.dumps(setup))() for _ in range(self.actors)]
        for i, item in enumerate(items):
            self.items.append(item)
            yield fns[i % self.actors](pickle.loads(pickle.dumps(item)))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "workers": self.actors}

    def close(self) -> None:
        pass


def test_spec_rebuilds_the_same_backend() -> None:
    b = TransformersBackend(TINY, batch_size=3, max_model_len=512, device="cpu")
    spec = pickle.loads(pickle.dumps(b.spec()))
    assert spec == TransformersSpec(TINY, 3, 512, "cpu")
    again = spec.build()
    assert again.describe() == b.describe() and again._loaded is None  # loads on first use


def test_actor_path_gives_the_in_process_output(tmp_path: Path, run_cli) -> None:
    src = _dataset(tmp_path, run_cli, long_prompt=True)
    params = dict(sampling=SAMPLING, keep_truncated=True, requests_per_chunk=2)
    local = generate([src], tmp_path / "local", backend=TransformersBackend(TINY, batch_size=4,
                     max_model_len=1024), cache=tmp_path / "c1", **params)
    eng = InProcessActors()
    pooled = generate([src], tmp_path / "pooled", backend=TransformersBackend(
        TINY, batch_size=4, max_model_len=1024), cache=tmp_path / "c2", engine=eng, **params)
    assert len(eng.items) == 3  # 5 requests in chunks of 2
    assert _samples(tmp_path / "local") == _samples(tmp_path / "pooled")
    assert_same_output(tmp_path / "local", tmp_path / "pooled")
    for part in (D.KEPT, D.REJECTED):  # same rows in the same order
        a = D.Dataset.open(tmp_path / "local").read(part)
        b = D.Dataset.open(tmp_path / "pooled").read(part)
        assert a.equals(b), part
    assert pooled["engine"] == {"engine": "inproc", "workers": 2, "backend": "transformers"}
    assert local["engine"]["engine"] == "local"
    for key in ("samples_generated", "samples_failed", "tokens_in", "tokens_out",
                "finish_reasons"):
        assert pooled["generate"][key] == local["generate"][key], key

    # the samples the workers made were cached by this process: a rerun generates nothing
    eng2 = InProcessActors()
    again = generate([src], tmp_path / "again", backend=TransformersBackend(
        TINY, batch_size=4, max_model_len=1024), cache=tmp_path / "c2", engine=eng2, **params)
    assert again["generate"]["samples_generated"] == 0
    assert again["generate"]["samples_cached"] == local["generate"]["samples_generated"]
    # only the too-long prompt's 3 samples go to the workers again (failures are not cached)
    assert sorted(len(item) for item in eng2.items) == [0, 0, 3]
    assert _texts(tmp_path / "again") == _texts(tmp_path / "local")


def test_openai_backend_refuses_the_ray_engine(tmp_path: Path, run_cli) -> None:
    src = _dataset(tmp_path, run_cli)
    res = run_cli("generate", src, "--model", "m", "--out", tmp_path / "o", "--backend",
                  "openai", "--endpoint", "http://127.0.0.1:9/v1", "--engine", "ray", expect=2)
    assert "--engine ray goes with --backend transformers" in res.output
    res = run_cli("generate", src, "--model", TINY, "--out", tmp_path / "o", "--workers", "2",
                  expect=2)
    assert "--workers and --gpus-per-worker go with --engine ray" in res.output
    res = run_cli("generate", src, "--model", TINY, "--out", tmp_path / "o", "--engine", "spark",
                  expect=2)
    assert "--engine must be one of local, ray" in res.output
    assert not (tmp_path / "o").exists()



def test_cli_engine_ray_gives_the_local_output(local_ray: Any, tmp_path: Path,
                                               run_cli) -> None:
    src = _dataset(tmp_path, run_cli, long_prompt=True)
    common = ["--model", TINY, "--n", "3", "--max-new-tokens", "8", "--seed", "7",
              "--keep-truncated", "--max-model-len", "1024", "--batch-size", "4", "--quiet"]
    run_cli("generate", src, *common, "--out", tmp_path / "local", "--cache", tmp_path / "c1")
    run_cli("generate", src, *common, "--out", tmp_path / "ray", "--cache", tmp_path / "c2",
            "--engine", "ray", "--workers", "2")
    assert _samples(tmp_path / "local") == _samples(tmp_path / "ray")
    assert_same_output(tmp_path / "local", tmp_path / "ray")
    for part in (D.KEPT, D.REJECTED):
        assert D.Dataset.open(tmp_path / "local").read(part).equals(
            D.Dataset.open(tmp_path / "ray").read(part)), part
    m = read_manifest(tmp_path / "ray")
    assert m["engine"]["engine"] == "ray" and m["engine"]["workers"] == 2
    assert m["engine"]["backend"] == "transformers"
    assert m["rejected_by_reason"] == {"prompt_too_long": 1}
    assert_conserved(tmp_path / "ray")
    assert local_ray.is_initialized(), "an engine that joined a running Ray leaves it running"
