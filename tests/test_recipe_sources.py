"""The recipe's hub ids as the datasets' own cards spell them.

Source: huggingface.co/datasets/lmms-lab/llava-critic-113k (dataset card: repository
`lmms-lab/llava-critic-113k`, configs `pairwise` 40,154 rows and `pointwise` 72,782 rows).
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_llava_critic_hub_id_and_why_only_pairwise() -> None:
    text = (ROOT / "recipes" / "skywork-vl.yaml").read_text()
    recipe = yaml.safe_load(text)
    [critic] = [s for s in recipe["sources"] if s["kind"] == "llava-critic"]
    assert critic == {"kind": "llava-critic", "input": "hf://lmms-lab/llava-critic-113k",
                      "config": "pairwise"}
    assert "40,154" in text and "pointwise" in text  # the note says what is left out and why
    mk = (ROOT / "recipes" / "skywork-vl.mk").read_text()
    assert "hf://lmms-lab/llava-critic-113k --config pairwise" in mk
    assert "LLaVA-Critic-113k" not in mk
