"""The precision guard on the reward filter's score rules (curate.scoring.gate, issue 17).

Out-of-fold margins are drawn here, so the truth is known: a surrogate that tells clean
pairs (margin around +1) from flipped ones (around -1) rejects mostly the flipped pairs,
and one whose margins carry no signal rejects nothing and says why. Through the stage and
the CLI too: `--action flag` marks without the guard, and `curate check`'s
`reward_precision` rule fails a folder whose filter abstained.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate import dataset as D
from curate.scoring.calibration import fit_calibration
from curate.scoring.gate import validation_veto
from curate.scoring.rules import RewardRules, apply_rules
from curate.scoring.scorer import FunctionScorer
from curate.stages.reward import reward
from tests.helpers import assert_conserved, rows, write_jsonl

N = 1000


def _margins(signal: bool, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(margins, flipped mask): out-of-fold margins of N pairs, `noise` of them flipped."""
    rng = np.random.default_rng(seed)
    flipped = rng.random(N) < noise
    if signal:
        margin = np.where(flipped, -1.0, 1.0) + rng.normal(0, 0.6, N)
    else:
        margin = rng.normal(0, 1, N)
    return margin, flipped


def _keys(margin: np.ndarray) -> pa.Table:
    return pa.table({"pair_id": [f"p{i}" for i in range(len(margin))],
                     "chosen_reward": margin, "rejected_reward": np.zeros(len(margin))})


def test_an_informative_surrogate_rejects_mostly_the_flipped_pairs() -> None:
    margin, flipped = _margins(signal=True, noise=0.2)
    res = apply_rules(_keys(margin), RewardRules(disagree=True), out_of_fold=True)
    q = res.summary["quality"]
    rejected = np.array([r == "rm_disagrees" for r in res.reasons])
    assert not q["abstained"] and q["better_than_chance"]
    precision = flipped[rejected].mean()
    assert rejected.sum() > 0.5 * flipped.sum()  # most of the noise goes
    assert precision >= 0.8 and q["expected_precision"] >= 0.6
    assert abs(q["expected_precision"] - precision) < 0.15
    assert 0.1 < q["estimated_noise_rate"] < 0.3


@pytest.mark.parametrize("noise", [0.05, 0.1, 0.3])
def test_a_sharp_surrogate_pins_the_noise_rate_down(noise: float) -> None:
    margin, flipped = _margins(signal=True, noise=noise, seed=1)
    cal = fit_calibration(margin)
    lo, hi = cal.noise_rate_ci95
    assert cal.identified and lo <= flipped.mean() <= hi
    assert abs(cal.noise_rate - flipped.mean()) < 0.03
    # the lower bound the guard decides on is below the estimate, pair by pair
    assert np.all(cal.p_mislabelled_lower <= cal.p_mislabelled + 1e-12)


def test_a_blunt_surrogate_cannot_tell_noise_from_its_errors_and_says_so() -> None:
    """Margins that separate clean from flipped pairs only a little (a surrogate about 58%
    right, like frozen MiniLM on hh-rlhf): many noise rates fit, so no point estimate,
    no rejection, and the reason names it. Confident learning read this as ~45% noise."""
    rng = np.random.default_rng(3)
    flipped = rng.random(4 * N) < 0.3
    margin = np.where(flipped, -0.2, 0.2) + rng.normal(0, 1, 4 * N)
    cal = fit_calibration(margin)
    lo, hi = cal.noise_rate_ci95
    assert not cal.identified and lo <= flipped.mean() <= hi and lo == 0
    res = apply_rules(_keys(margin), RewardRules(disagree=True), out_of_fold=True)
    q = res.summary["quality"]
    assert q["better_than_chance"] and q["abstained"] and not any(res.reasons)
    assert "consistent with no label noise" in q["abstain_reason"]
    assert "cannot tell label noise from its own errors" in q["abstain_reason"]
    assert q["estimated_noise_rate"] is None and q["estimated_noise_rate_ci95"] == [lo, hi]
    plain = apply_rules(_keys(margin), RewardRules(disagree=True, min_precision=0),
                        out_of_fold=True).summary["quality"]
    assert plain["rejected"] == int((margin < 0).sum())
    assert plain["expected_precision"] is None and plain["expected_precision_lower"] == 0
    assert any("cannot rule out" in w for w in plain["warnings"])


def test_the_expected_precision_bound_holds_on_what_is_rejected() -> None:
    for seed in range(5):
        margin, flipped = _margins(signal=True, noise=0.2, seed=seed)
        res = apply_rules(_keys(margin), RewardRules(disagree=True, min_precision=0.8),
                          out_of_fold=True)
        q = res.summary["quality"]
        rejected = np.array([r == "rm_disagrees" for r in res.reasons])
        assert q["expected_precision_lower"] >= 0.8
        assert flipped[rejected].mean() >= q["expected_precision_lower"] - 0.05


@pytest.mark.parametrize(("gain_ci", "vetoed"), [
    ((-0.03, -0.01), True), ((-0.003, 0.026), True), ((0.0, 0.02), True),
    ((0.004, 0.03), False)])
def test_retraining_must_show_a_significant_gain(gain_ci: tuple[float, float],
                                                 vetoed: bool) -> None:
    check = {"gain_ci95": list(gain_ci), "gain": sum(gain_ci) / 2,
             "dropped_from_training": 40, "accuracy_raw": 0.57, "accuracy_filtered": 0.58}
    reason = validation_veto(check)
    assert (reason is not None) == vetoed
    if vetoed:
        assert "no sign that the filter helps" in reason and "40 pairs" in reason
    assert validation_veto(None) is None


def test_a_surrogate_at_chance_rejects_nothing_and_says_why() -> None:
    margin, _ = _margins(signal=False, noise=0.2)
    res = apply_rules(_keys(margin), RewardRules(disagree=True, min_margin=0.5),
                      out_of_fold=True)
    q = res.summary["quality"]
    assert q["abstained"] and q["abstain_reason"]
    assert q["rejected"] == 0 and not any(res.reasons)
    assert q["marked_by_rules"] > 0  # the plain rules would have dropped these
    plain = apply_rules(_keys(margin), RewardRules(disagree=True, min_precision=0))
    assert sum(r is not None for r in plain.reasons) == q["marked_by_rules"] - sum(
        (margin >= 0) & (margin < 0.5))


def test_max_reject_fraction_caps_the_most_probably_mislabelled_first() -> None:
    margin, _ = _margins(signal=True, noise=0.2)
    res = apply_rules(_keys(margin), RewardRules(disagree=True, max_reject_fraction=0.05),
                      out_of_fold=True)
    rejected = [i for i, r in enumerate(res.reasons) if r]
    assert 0 < len(rejected) <= 0.05 * N
    kept_marked = [i for i in range(N) if not res.reasons[i] and margin[i] < 0]
    assert max(margin[rejected]) <= min(margin[kept_marked])  # the lowest margins went


@pytest.fixture()
def chance_folder(tmp_path: Path, run_cli) -> Path:
    """Pairs whose reward (a hash of the text) says nothing about the label."""
    src = write_jsonl(tmp_path / "raw.jsonl", [
        {"prompt": f"question {i}?", "chosen": f"answer {i} a", "rejected": f"answer {i} b"}
        for i in range(200)])
    run_cli("ingest", "generic", src, "--out", tmp_path / "in", "--quiet")
    return tmp_path / "in"


def _hash_rewards(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    import zlib

    def score(texts: list[str]) -> np.ndarray:
        return np.array([zlib.crc32(t.encode()) / 2**32 for t in texts])

    return score(table["chosen"].to_pylist()), score(table["rejected"].to_pylist())


def test_the_stage_abstains_drops_nothing_and_check_fails_it(chance_folder: Path,
                                                             tmp_path: Path, run_cli) -> None:
    scorer = FunctionScorer(_hash_rewards, "hash-v1", name="hash")
    out = tmp_path / "dropped"
    m = reward([chance_folder], out, scorer=scorer, rules=RewardRules(disagree=True))
    assert_conserved(out)
    assert m["rows_rejected"] == 0 and m["reward"]["quality"]["abstained"]
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - conservation\n  - reward_precision\n")
    res = run_cli("check", out, "--rules", rules, "--format", "json", expect=1)
    assert json.loads(res.output)["failed"] == ["reward_precision"]


def test_action_flag_marks_every_matching_pair(chance_folder: Path, tmp_path: Path) -> None:
    """Flagging removes nothing, so the guard does not silence it (the regenerate loop)."""
    scorer = FunctionScorer(_hash_rewards, "hash-v1", name="hash")
    out = tmp_path / "flagged"
    m = reward([chance_folder], out, scorer=scorer, rules=RewardRules(disagree=True),
               action="flag")
    kept = rows(out)
    flagged = [r for r in kept if r["needs_regeneration"]]
    assert m["rows_rejected"] == 0 and len(kept) == 200
    assert len(flagged) == sum(r["reward_margin"] < 0 for r in kept) > 0
    assert not rows(out, D.REJECTED)


def test_check_passes_a_folder_that_only_flagged(chance_folder: Path, tmp_path: Path,
                                                 run_cli) -> None:
    """`reward_precision` judges what a filter removed; flagging removed nothing."""
    scorer = FunctionScorer(_hash_rewards, "hash-v1", name="hash")
    out = tmp_path / "flagged"
    reward([chance_folder], out, scorer=scorer, rules=RewardRules(disagree=True),
           action="flag")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - conservation\n  - reward_precision\n")
    res = run_cli("check", out, "--rules", rules, "--format", "json")
    assert json.loads(res.output)["failed"] == []
