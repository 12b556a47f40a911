"""Token efficiency of MiniLM training batches on real hh-rlhf pairs, packed vs padded.

The batches are the ones `curate train` builds for recipes/train/minilm-full.yaml (the
seeded 80% split, batch 16, length-grouped order, max_length 128), collated through the
training collator both ways; no training runs, so this takes seconds. The packed figure
from a real training run is asserted in test_train_real.py (full fine-tuning).
"""

from __future__ import annotations

import numpy as np
import pytest

from curate.engine import get_engine
from curate.models.reward_model import build_reward_model
from curate.stages.ingest import ingest
from curate.train.collator import PairCollator, PairDataset
from curate.train.data import PairRows, approx_lengths, load_pairs, split_pairs
from tests.conftest import shared_data
from tests.rm_helpers import one_torch_thread  # noqa: F401

BATCH = 16


@pytest.fixture(scope="module")
def train_pairs(tmp_path_factory):
    src = shared_data("hh-rlhf/harmless-base-test.jsonl.gz")
    tmp = tmp_path_factory.mktemp("hh_eff")
    ingest("hh-rlhf", [str(src)], tmp / "hh", engine=get_engine("local", workers=1))
    return split_pairs(load_pairs(tmp / "hh"), 0.2, seed=0)[0]


def _efficiency(train, packed: bool) -> tuple[float, int, int]:
    rm = build_reward_model("minilm", max_length=128, min_prompt_tokens=16)
    rm.packing = packed
    ds = PairDataset(PairRows(train), np.arange(len(train)), np.zeros(len(train), np.float32),
                     approx_lengths(train))
    ds.set_order(0, BATCH)
    collate = PairCollator(rm)
    real = computed = 0
    for s in range(0, len(ds), BATCH):
        b = collate([ds[i] for i in range(s, min(s + BATCH, len(ds)))])
        real += int(b["real_tokens"])
        computed += int(b["computed_tokens"])
        assert int(b["computed_tokens"]) == b["input_ids"].numel()
    return real / computed, real, computed


@pytest.mark.slow  # about 20 s of CPU (tokenizing 1,842 pairs twice); a minute on a busy machine
def test_packed_batches_compute_no_padding_on_hh_rlhf(train_pairs, record_property):
    assert len(train_pairs) == 1842
    packed, real_p, comp_p = _efficiency(train_pairs, packed=True)
    padded, real_d, comp_d = _efficiency(train_pairs, packed=False)
    line = (f"hh-rlhf MiniLM batches of {BATCH} pairs, max_length 128: token efficiency "
            f"packed {packed:.4f} ({real_p}/{comp_p}), padded {padded:.4f} "
            f"({real_d}/{comp_d}, length-grouped)")
    print(line)
    record_property("token_efficiency", line)
    assert real_p == real_d  # same sequences either way
    assert packed >= 0.95
    assert padded < packed
