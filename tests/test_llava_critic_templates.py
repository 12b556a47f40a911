"""LLaVA-Critic-113k on the prompts and verdicts its own sources document.

Sources:
- the dataset card, huggingface.co/datasets/lmms-lab/llava-critic-113k (README.md
  `dataset_info`): configs `pairwise` (40,154 rows) and `pointwise` (72,782 rows), features
  `id` (string), `source` (string), `conversations` (list of {from, value}), `image` (Image);
- the model card, huggingface.co/lmms-lab/llava-critic-7b (README.md, "Quick Start"): the
  pairwise prompt "Question: [...]\\nThe first response: [...]\\nThe second response: [...]
  \\nASSISTANT:\\n" and the pointwise prompt "Question: [...]\\nThe LMM response: [...]
  \\nASSISTANT:\\n", each after "<image>\\n" and an instruction paragraph;
- the pointwise variant with a reference answer, "Question: [...]\\nGround Truth: [...]\\n
  The LMM response: [...]\\nASSISTANT:\\n" (issue 14 item 1; the same
  text is the CRITIC_PROMPT_TEMPLATE of public LLaVA-Critic wrapper code).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.sources.llava_critic import parse_verdict
from curate.stages.ingest import ingest
from tests.helpers import assert_conserved, jpeg_bytes, rows, write_parquet

PAIR_INSTRUCTION = (
    "Given an image and a corresponding question, please serve as an unbiased and fair judge "
    "to evaluate the quality of the answers provided by a Large Multimodal Model (LMM). "
    "Determine which answer is better and explain your reasoning with specific details. "
    "Your task is provided as follows:\n")
POINT_INSTRUCTION = (
    "Given an image and a corresponding question, please serve as an unbiased and fair judge "
    "to evaluate the quality of answer answers provided by a Large Multimodal Model (LMM). "
    "Score the response out of 100 and explain your reasoning with specific details. "
    "Your task is provided as follows:\n")
GT_INSTRUCTION = (
    "Given an image, a corresponding question, and the ground truth answer, please serve as "
    "an unbiased and fair judge to evaluate the quality of the answers provided by a Large "
    "Multimodal Model (LMM). Score the response out of 100 and explain your reasoning with "
    "specific details. Your task is provided as follows:\n")


def pointwise_human(question: str, response: str, ground_truth: str | None = None) -> str:
    if ground_truth is None:
        return (f"<image>\n{POINT_INSTRUCTION}Question: [{question}]\n"
                f"The LMM response: [{response}]\nASSISTANT:\n ")
    return (f"<image>\n{GT_INSTRUCTION}Question: [{question}]\nGround Truth: [{ground_truth}]\n"
            f"The LMM response: [{response}]\nASSISTANT:\n")


def pairwise_human(question: str, first: str, second: str) -> str:
    return (f"<image>\n{PAIR_INSTRUCTION}Question: [{question}]\nThe first response: [{first}]\n"
            f"The second response: [{second}]\nASSISTANT:\n")


def critic_row(row_id: str, human: str, judge: str, image: bytes) -> dict:
    """A row as the dataset card's features lay it out (image: Image -> {bytes, path})."""
    return {"id": row_id, "source": "VLFeedback",
            "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": judge}],
            "image": {"bytes": image, "path": None}}


def test_pointwise_official_templates_keep_question_response_and_ground_truth(tmp_path: Path):
    """The model card's prompt and its Ground Truth variant: the question is the bracketed
    text only, the response is never cut at 'response:', the ground truth goes to meta."""
    img = jpeg_bytes()
    q = "What this image presents?"
    src = write_parquet(tmp_path / "pointwise.parquet", [
        critic_row("p0", pointwise_human(q, "This is a handwritten number seven."),
                   "The response is accurate. Overall score: 90", img),
        critic_row("p1", pointwise_human(q, "A cross [drawn] in black ink."),
                   "It misreads the digit. Overall score: 20", img),
        critic_row("g0", pointwise_human("Which digit?", "Seven.", "The digit 7."),
                   "Correct and concise. Overall score: 95", img),
        critic_row("g1", pointwise_human("Which digit?", "One.", "The digit 7."),
                   "Wrong digit. Overall score: 10", img),
        critic_row("x0", f"<image>\nQuestion: [{q}]\nThe response: [Seven.]\nASSISTANT:\n",
                   "Overall score: 50", img),
    ])
    out = tmp_path / "out"
    m = ingest("llava-critic", [str(src)], out, config="pointwise")
    assert_conserved(out)
    kept = {r["source_id"]: r for r in rows(out)}
    assert set(kept) == {"p0|p1", "g0|g1"}
    pair = kept["p0|p1"]
    assert pair["prompt"] == [{"role": "user", "content": q}]
    assert (pair["chosen"], pair["rejected"]) == ("This is a handwritten number seven.",
                                                  "A cross [drawn] in black ink.")
    assert (pair["chosen_score"], pair["rejected_score"]) == (90.0, 20.0)
    gt = kept["g0|g1"]
    assert gt["prompt"][0]["content"] == "Which digit?"
    assert (gt["chosen"], gt["rejected"]) == ("Seven.", "One.")
    assert json.loads(gt["meta"])["ground_truth"] == "The digit 7."
    assert "ground_truth" not in json.loads(pair["meta"])
    [bad] = rows(out, "rejected")
    assert (bad["source_id"], bad["reject_reason"]) == ("x0", "unparseable_prompt")
    assert m["rejected_by_reason"] == {"unparseable_prompt": 1}


def test_pairwise_model_card_prompt_and_unknown_template(tmp_path: Path):
    img = jpeg_bytes()
    human = pairwise_human("What this image presents?", "A cross.", "A handwritten seven.")
    src = write_parquet(tmp_path / "pairwise.parquet", [
        critic_row("a", human, "The first response misreads the digit. The better response: [2]",
                   img),
        critic_row("b", "<image>\nRate these: first=A cross, second=A seven", "The better "
                   "response: [1]", img),
    ])
    out = tmp_path / "out"
    ingest("llava-critic", [str(src)], out)
    assert_conserved(out)
    [row] = rows(out)
    assert row["prompt"][0]["content"] == "What this image presents?"
    assert (row["chosen"], row["rejected"]) == ("A handwritten seven.", "A cross.")
    [bad] = rows(out, "rejected")
    assert (bad["source_id"], bad["reject_reason"]) == ("b", "unparseable_prompt")


@pytest.mark.parametrize(("judge", "verdict"), [
    ("Response B hallucinates a dog. The better response: [A]", 1),
    ("Response A hallucinates a dog. The better response: [B]", 2),
    ("The better response: [first]", 1),
    ("The better response: [second]", 2),
    # a clear verdict, then a remark that is not a verdict statement
    ("The better response: [1]. Both responses are equally good at brevity.", 1),
    ("The better response: [B], although both responses are equally fluent.", 2),
    # a tie statement after an earlier verdict: the last statement decides
    ("The better response: [1] at first sight; on reflection, two responses are equally good.",
     0),
    ("Two responses are equally good.", 0),
    ("Both responses are equally good.", None),  # not the dataset's tie statement
])
def test_pairwise_verdict_statements(judge: str, verdict: int | None) -> None:
    assert parse_verdict(judge) == verdict
