"""Every reject reason a stage can write, in one registry: the README's table is rendered
from it (`python -m curate.reasons`), and under CURATE_STRICT_REASONS=1 (the test suite
sets it) a stage that writes a reason not registered for it fails, so the table cannot
drift from the code.

The built-in stages' reasons are the table below (several are written by more than one
stage, and its order is the README's); a stage added later registers its own through
`curate.pipeline.runner.register_stage(..., reasons=...)`, in its module.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from curate.registry import Registry, import_submodules


@dataclass(frozen=True)
class Reason:
    stages: tuple[str, ...]
    meaning: str
    detail: str


_I = ("ingest",)
_BUILT_IN: dict[str, Reason] = {
    # ingest: the row itself
    "malformed_row": Reason(_I, "the record cannot be read as this format (a value of the "
                            "wrong type, nesting too deep, a transcript that does not parse)",
                            "what is wrong, mostly as `FILE:LINE: ...`"),
    "no_prompt": Reason(_I, "no prompt, or no non-empty user message", "what is missing"),
    "prompt_not_string": Reason(_I, "the prompt is not text (the raw value is kept in "
                                "`meta.raw_prompt`)", "its type"),
    "missing_response": Reason(_I, "chosen or rejected is missing or null", "which one"),
    "response_not_string": Reason(_I, "chosen or rejected is not text", "which one, its type"),
    "empty_response": Reason(_I, "chosen or rejected is empty, whitespace or zero-width "
                             "characters only", "which one"),
    "identical_responses": Reason(_I, "chosen equals rejected", "-"),
    "invalid_unicode": Reason(_I, "a lone surrogate in the text (kept escaped)",
                              "the field"),
    "invalid_score": Reason(_I, "a score that is NaN, infinite or not a number", "the value"),
    "score_contradicts_label": Reason(_I, "chosen scored below rejected", "both scores"),
    "ambiguous": Reason(_I + ("reward", "pairs"),
                        "no preference: a judge's tie, equal scores or a lead under "
                        "`--min-score-gap` (ingest); a source score gap under "
                        "`--min-source-gap` (reward); a best-worst margin of 0 or under "
                        "`--min-margin` (pairs)", "the scores or the judge's words"),
    "unparseable_judgment": Reason(_I, "a judge's answer with no verdict statement or score",
                                   "`FILE:LINE: why`"),
    "unparseable_prompt": Reason(_I, "a judge prompt in no known template (LLaVA-Critic)",
                                 "`FILE:LINE: why`"),
    "unpaired": Reason(_I, "a pointwise score with no partner for the same image and question",
                       "why"),
    "duplicate_pair_id": Reason(_I, "a second row with the same content hash", "the first "
                                "row's `source_id`"),
    "duplicate_prompt_id": Reason(_I, "a second candidates row with the same source, id "
                                  "and content", "`same source, id and content as ID`"),
    "no_responses": Reason(_I + ("generate",), "a candidates row (or a generation) with no "
                           "usable response", "why"),
    # ingest: the row's images
    "corrupt_image": Reason(_I + ("dedup",), "an image that does not decode fully (dedup "
                            "decodes again: a folder not made by ingest may hold one)",
                            "`image N: the decoder's error`"),
    "unsupported_image_format": Reason(_I, "not JPEG, PNG, WEBP, GIF, BMP or TIFF (never "
                                       "decoded)", "the format found"),
    "image_too_large": Reason(_I, "over `--max-pixels` or `--max-image-bytes`", "the size"),
    "image_path_escape": Reason(_I, "a relative image path that resolves outside "
                                "`--image-root`", "the path"),
    "invalid_image_path": Reason(_I, "an image path the file system refuses (NUL, too long)",
                                 "the path"),
    "missing_image": Reason(_I, "no file at the image path under `--image-root`", "the path"),
    "unreadable_image": Reason(_I, "the image file exists but cannot be read", "the error"),
    "no_image_root": Reason(_I, "an image path but no `--image-root` (training sources; eval "
                            "sets are ingested text-only instead)", "the path"),
    # dedup
    "exact_duplicate": Reason(("dedup",), "same normalised prompt, decoded pixels and "
                              "responses as a surviving row", "the survivor's `pair_id`"),
    "near_duplicate_image": Reason(("dedup",), "same normalised prompt and every image within "
                                   "`--max-distance` bits of a survivor's",
                                   "`<pair_id> distance=<bits>`"),
    "label_conflict": Reason(("dedup",), "the same pair with chosen and rejected swapped",
                             "`<pair_id> (votes a:b)`"),
    # similar, decontam
    "similar_prompt": Reason(("similar",), "a prompt within `--threshold` cosine of a kept "
                             "one, with matching images", "`<pair_id> (prompt cosine c)`"),
    "responses_too_similar": Reason(("similar",), "chosen ~ rejected above "
                                    "`--response-threshold`", "the cosine"),
    "contaminated": Reason(("decontam",), "overlaps an eval set: a shared n-gram, the same "
                           "prompt, a close embedding or a near-duplicate image",
                           "`test: eval-set row (info)`, per test that fired"),
    # reward
    "rm_disagrees": Reason(("reward",), "the reward model prefers rejected (`--disagree`)",
                           "the margin, P(mislabelled)"),
    "low_margin": Reason(("reward",), "reward margin under `--min-margin`", "the margin"),
    "low_chosen_score": Reason(("reward",), "chosen's reward under `--min-chosen`",
                               "the score"),
    "not_top_margin": Reason(("reward",), "outside the top `--keep-top` share of its "
                             "category or source", "its rank"),
    # pairs, generate
    "too_few_candidates": Reason(("pairs",), "fewer than 2 responses to pair", "the count"),
    "near_identical_candidates": Reason(("pairs",), "every response is near-identical to "
                                        "another (`--near-identical`)", "which ones"),
    "prompt_too_long": Reason(("generate",), "the prompt leaves no room for "
                              "`--max-new-tokens`", "the token counts"),
    "generation_failed": Reason(("generate",), "the model or server failed for this prompt",
                                "the error"),
}
REASONS: Registry[Reason] = Registry("reject reason")
for _i, (_name, _reason) in enumerate(_BUILT_IN.items()):
    REASONS.add(_name, _reason, order=_i)


def unregistered(stage: str, reasons: Iterable[str]) -> list[str]:
    """The reasons a stage wrote that this registry does not list for it."""
    return sorted(r for r in set(reasons) if r not in REASONS or stage not in REASONS[r].stages)


def check_registered(stage: str, reasons: Iterable[str]) -> None:
    """Under CURATE_STRICT_REASONS=1 (tests), fail on a reason missing from the registry."""
    if os.environ.get("CURATE_STRICT_REASONS", "") in ("", "0"):
        return
    missing = unregistered(stage, reasons)
    if missing:
        raise AssertionError(f"{stage} wrote reject reasons not in curate/reasons.py: {missing}")


def markdown_table() -> str:
    """The README's table of every reject reason (every stage module imported first, so a
    stage that registers reasons of its own is in it)."""
    import_submodules("curate.stages")
    lines = ["| reason | stage | when | `reject_detail` |", "|---|---|---|---|"]
    for name, r in REASONS.items():
        lines.append(f"| `{name}` | {', '.join(r.stages)} | {r.meaning} | {r.detail} |")
    return "\n".join(lines)


if __name__ == "__main__":
    # the registry stages add to is the imported module's, not this __main__ copy's
    from curate.reasons import markdown_table as table

    print(table())
