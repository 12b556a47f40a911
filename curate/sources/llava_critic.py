"""lmms-lab/llava-critic-113k: judge conversations turned back into preference pairs.

Config `pairwise`: the human turn holds the question and two responses, the judge's
turn ends with a verdict ("The better response: [1]" / "[2]", or "Two responses are
equally good"). Config `pointwise`: one scored response per row; rows that share
image and question are paired best against worst.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from curate.sources.base import (
    Adapter,
    MalformedRow,
    RawPair,
    describe,
    image_refs,
    jsonable,
    record_id,
    register_adapter,
    user,
)
from curate.sources.readers import Record

_QUESTION = r"(?:\[Question\]|Question:|\[Instruction\]|Instruction:)"
_PAIR_TEMPLATES = [
    # Question: [...]\nThe first response: [...]\nThe second response: [...]
    re.compile(
        _QUESTION + r"\s*(?P<q>.*?)\s*(?:The first response:|\[The first response\])\s*(?P<a>.*?)"
        r"\s*(?:The second response:|\[The second response\])\s*(?P<b>.*?)\s*"
        r"(?:\n\s*ASSISTANT:.*|\n\s*Please .*|$)",
        re.S | re.I,
    ),
    # [The Start of Assistant 1's Answer] ... [The End of Assistant 1's Answer]
    re.compile(
        _QUESTION + r"\s*(?P<q>.*?)\s*\[The Start of Assistant 1's Answer\]\s*(?P<a>.*?)\s*"
        r"\[The End of Assistant 1's Answer\]\s*\[The Start of Assistant 2's Answer\]\s*"
        r"(?P<b>.*?)\s*\[The End of Assistant 2's Answer\]",
        re.S | re.I,
    ),
    # Response 1: ... Response 2: ...  (also "Response A:" / "Answer 1:" / "[Response 1]")
    re.compile(
        _QUESTION + r"\s*(?P<q>.*?)\s*\[?(?:Response|Answer) [1A]\]?:?\s*(?P<a>.*?)\s*"
        r"\[?(?:Response|Answer) [2B]\]?:?\s*(?P<b>.*?)\s*(?:\n\s*ASSISTANT:.*|$)",
        re.S | re.I,
    ),
]
# The two pointwise prompts of the model card (huggingface.co/lmms-lab/llava-critic-7b,
# README "Quick Start"): "Question: [Q]\nThe LMM response: [R]\nASSISTANT:" and, with a
# reference answer, "Question: [Q]\nGround Truth: [G]\nThe LMM response: [R]\nASSISTANT:".
# Fields are bracketed; a field ends where the next label starts, so brackets inside a
# field are kept. Anything else is refused (`unparseable_prompt`), never guessed.
_POINT_TEMPLATE = re.compile(
    r"Question:\s*\[(?P<q>.*?)\]\s*\n\s*(?:Ground Truth:\s*\[(?P<gt>.*?)\]\s*\n\s*)?"
    r"The LMM response:\s*\[(?P<a>.*)\]\s*(?:\n\s*ASSISTANT:\s*)?$",
    re.S,
)
# The verdict statements a pairwise judgment ends with: "The better response: [1]" (also
# [2], [first], [second], [A], [B], "[The second response]") or "Two responses are equally
# good". The last statement decides; other phrases ("both are equally brief") do not.
_VERDICT = re.compile(
    r"the better (?:response|answer)\s*(?:is)?\s*:?\s*"
    r"(?:\[\s*(?:the\s+)?(?P<b>1|2|first|second|a|b)(?:\s+(?:response|answer))?\s*\]"
    r"|(?:the\s+)?(?P<p>1|2|first|second)\b(?:\s+(?:response|answer))?)"
    r"|(?P<tie>\btwo (?:responses|answers) are equally\b)",
    re.I,
)
_SCORE = re.compile(
    r"(?:overall score|score|rating)\s*(?:is|of)?\s*:?\s*\[*\s*(\d+(?:\.\d+)?)", re.I
)


class UnparseablePrompt(MalformedRow):
    """A judge prompt in none of the known templates: refused, never guessed."""


def _unbracket(text: str) -> str:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    return text


def _turns(data: dict[str, Any]) -> tuple[str, str]:
    conv = data.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2:
        raise MalformedRow("'conversations' must hold a human turn and a judge turn")
    human = next((t for t in conv if isinstance(t, dict) and t.get("from") == "human"), None)
    judge = next((t for t in reversed(conv) if isinstance(t, dict) and t.get("from") == "gpt"),
                 None)
    if human is None or judge is None:
        raise MalformedRow("'conversations' lacks a human or a gpt turn")
    h, j = human.get("value"), judge.get("value")
    if not isinstance(h, str) or not isinstance(j, str):
        raise MalformedRow("conversation turns must be strings")
    return h, j


def parse_pairwise_prompt(text: str) -> tuple[str, str, str]:
    """(question, response 1, response 2) from a pairwise judge prompt."""
    for tpl in _PAIR_TEMPLATES:
        m = tpl.search(text)
        if m:
            return _unbracket(m["q"]), _unbracket(m["a"]), _unbracket(m["b"])
    raise UnparseablePrompt("the human turn matches no known pairwise judge template")


def parse_verdict(text: str) -> int | None:
    """1 or 2 for the better response, 0 for a tie, None when no verdict is found.

    Only verdict statements count (see `_VERDICT`), and the last one wins: judges often
    restate the task first, and a phrase such as "both responses are equally brief" after
    "The better response: [1]" is a remark, not a tie.
    """
    verdict: int | None = None
    for m in _VERDICT.finditer(text):
        if m["tie"]:
            verdict = 0
        else:
            v = (m["b"] or m["p"]).lower()
            verdict = 1 if v in ("1", "first", "a") else 2
    return verdict


def parse_score(text: str) -> float | None:
    matches = _SCORE.findall(text)
    return float(matches[-1]) if matches else None


@register_adapter(order=20)
class LLaVACritic(Adapter):
    kind = "llava-critic"
    default_source = "llava-critic"
    description = "lmms-lab/llava-critic-113k (--config pairwise | pointwise)"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._unpaired = 0
        self._pairs = 0

    @property
    def config(self) -> str:
        return self.options.config or "pairwise"

    def convert(self, record: Record) -> RawPair:
        human, judge = _turns(record.data)
        try:
            question, r1, r2 = parse_pairwise_prompt(human)
        except UnparseablePrompt as exc:
            return self._reject_record(record, "unparseable_prompt", f"{record.where}: {exc}")
        q = re.sub(r"^\s*<image>\s*", "", question)
        pair = RawPair(
            source_id=record_id(record, "id"),
            prompt=user(q),
            chosen=r1,
            rejected=r2,
            images=image_refs(record.data.get("image")),
            category=record.data.get("source"),
            meta={"judgment": judge},
        )
        verdict = parse_verdict(judge)
        if verdict == 0:
            pair.reject = ("ambiguous", "judge: the two responses are equally good")
        elif verdict is None:
            pair.reject = ("unparseable_judgment", f"{record.where}: no verdict in judge turn")
        elif verdict == 2:
            pair.chosen, pair.rejected = r2, r1
        return pair

    @property
    def record_by_record(self) -> bool:
        return self.config == "pairwise"  # pointwise pairs records across the whole input

    def pairs(self, records: Callable[[], Iterator[Record]]) -> Iterator[RawPair]:
        if self.config == "pairwise":
            yield from super().pairs(records)
            return
        if self.config != "pointwise":
            raise ValueError(
                f"llava-critic --config must be pairwise or pointwise, not {self.config}"
            )
        yield from self._pointwise(records)

    # -- pointwise -------------------------------------------------------------------------
    def _pointwise(self, records: Callable[[], Iterator[Record]]) -> Iterator[RawPair]:
        infos: list[_Point | None] = []
        problems: dict[int, tuple[str, str]] = {}
        for i, rec in enumerate(records()):
            try:
                if rec.problem is not None:
                    raise MalformedRow(rec.problem)
                infos.append(_point(rec))
            except UnparseablePrompt as exc:
                infos.append(None)
                problems[i] = ("unparseable_prompt", f"{rec.where}: {exc}")
            except Exception as exc:  # noqa: BLE001 - one row's failure is that row's rejection
                infos.append(None)
                problems[i] = ("malformed_row", describe(exc))
        groups: dict[tuple[str, str], list[int]] = {}
        scores: dict[int, float] = {}  # row -> its score, for the rows that have one
        for i, info in enumerate(infos):
            if info is not None and info.score is not None:
                groups.setdefault((info.image_key, info.question), []).append(i)
                scores[i] = info.score
        role: dict[int, tuple[str, Any]] = {}
        for members in groups.values():
            ranked = sorted(members, key=lambda k: (-scores[k], k))
            hi, lo = ranked[0], ranked[-1]
            if len(members) == 1:
                role[hi] = ("unpaired", "no other scored response for this image and question")
            elif scores[hi] == scores[lo]:
                for k in members:
                    role[k] = ("ambiguous", "all responses to this image and question score equal")
            else:
                role[hi] = ("chosen", lo)
                role[lo] = ("paired", hi)
                for k in ranked[1:-1]:
                    role[k] = ("unpaired", "only the best and worst response of a group are paired")
        for i, rec in enumerate(records()):
            info = infos[i]
            if info is None:
                yield self._reject_record(rec, *problems[i])
                continue
            if info.score is None:
                yield self._reject_record(rec, "unparseable_judgment", "no score in judge turn")
                continue
            kind, other = role[i]
            if kind == "paired":
                continue  # written with its partner
            if kind == "chosen":
                lo = infos[other]
                assert lo is not None
                self._pairs += 1
                yield RawPair(
                    source_id=f"{info.source_id}|{lo.source_id}",
                    prompt=user(info.question),
                    chosen=info.response,
                    rejected=lo.response,
                    images=image_refs(rec.data.get("image")),
                    chosen_score=info.score,
                    rejected_score=lo.score,
                    category=rec.data.get("source"),
                    meta={"pointwise_ids": [info.source_id, lo.source_id],
                          **({"ground_truth": info.ground_truth} if info.ground_truth else {})},
                    consumed=2,
                )
            else:
                self._unpaired += 1
                yield self._reject_record(rec, kind, other, info)

    def _reject_record(
        self, rec: Record, reason: str, detail: str, info: _Point | None = None
    ) -> RawPair:
        return RawPair(
            source_id=record_id(rec, "id"),
            prompt=user(info.question) if info else None,
            chosen=info.response if info else None,
            rejected=None,
            chosen_score=info.score if info else None,
            category=rec.data.get("source"),
            meta={"raw": jsonable(rec.data), "where": rec.where},
            reject=(reason, detail),
            where=rec.where,
        )

    def extra_manifest(self) -> dict[str, Any]:
        if self.config != "pointwise":
            return {}
        return {"pointwise": {"pairs": self._pairs, "records_not_paired": self._unpaired}}


@dataclass
class _Point:
    source_id: str
    question: str
    response: str
    score: float | None
    image_key: str
    ground_truth: str | None = None


def _point(rec: Record) -> _Point:
    human, judge = _turns(rec.data)
    m = _POINT_TEMPLATE.search(human)
    if not m:
        raise UnparseablePrompt("the human turn matches neither pointwise template of the model "
                                "card ('Question: [...]\\n[Ground Truth: [...]\\n]The LMM "
                                "response: [...]')")
    question = m["q"].strip()
    refs = image_refs(rec.data.get("image"))
    if refs and refs[0].data is not None:
        image_key = hashlib.sha256(refs[0].data).hexdigest()
    elif refs:
        image_key = f"path:{refs[0].path}"
    else:
        image_key = ""
    return _Point(record_id(rec, "id"), question, m["a"].strip(), parse_score(judge), image_key,
                  m["gt"].strip() if m["gt"] is not None else None)
