"""What "the same text" means, in one place.

One normalisation, `normalise_text`: Unicode NFKC, case-folded, whitespace runs as one
space, trimmed. Everything that compares texts builds on it, at one of two strengths,
named here so that the difference is a choice and not an accident:

- exact forms keep punctuation (`normalise_text`, `normalise_prompt`): `dedup`'s row keys
  and `no_exact_duplicates` ("What?" and "What." are different prompts), `pairs`'
  near-identical responses and `generate`'s request keys;
- word forms drop punctuation and `<image>` placeholders (`normalise_words`,
  `prompt_keys`): contamination, where a copied benchmark question counts whatever its
  punctuation. `decontam`'s `exact` test and the `no_contamination` gate both match
  prompts by `prompt_keys`, so they agree on what "the same prompt" is.

`<image>` placeholders say where an image goes; some sources write them and some do not,
and the images themselves are compared separately, so prompts are compared without them
(found after case folding and NFKC: `<IMAGE>` and fullwidth forms are placeholders too).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

IMAGE_TOKEN = "<image>"
_WORD = re.compile(r"\w+")

Prompt = Sequence[dict[str, Any]] | None


def _fold(text: str) -> str:
    """NFKC, case-folded, NFKC again (folding can leave a character decomposed: `ǰ`)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def normalise_text(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space and trimmed; punctuation
    and `<image>` placeholders stay."""
    return " ".join(_fold(text).split())


def _without_placeholders(text: str) -> str:
    return _fold(text).replace(IMAGE_TOKEN, " ")


def normalise_prompt(prompt: Prompt) -> list[list[str]]:
    """[role, text] per message, the text normalised and without `<image>` placeholders:
    the exact form of a prompt (punctuation kept)."""
    return [[m.get("role") or "", " ".join(_without_placeholders(m.get("content") or "").split())]
            for m in prompt or []]


def normalise_words(text: str) -> list[str]:
    """The words of the normalised text, without punctuation or `<image>` placeholders."""
    return _WORD.findall(_without_placeholders(text))


def prompt_text(prompt: Prompt) -> str:
    """All messages' contents, one after another."""
    return "\n".join((m.get("content") or "") for m in prompt or [])


def last_user_text(prompt: Prompt) -> str:
    """The last user message (the question being answered); the whole prompt's text if no
    message is the user's."""
    for m in reversed(list(prompt or [])):
        if m.get("role") == "user":
            return m.get("content") or ""
    return prompt_text(prompt)


def prompt_keys(prompt: Prompt) -> list[str]:
    """What a prompt is matched by for contamination: the normalised words (joined by one
    space) of the whole prompt and of its last user message; empty ones left out. Two
    prompts are the same when they share a key."""
    keys = {" ".join(words) for words in (normalise_words(prompt_text(prompt)),
                                          normalise_words(last_user_text(prompt))) if words}
    return sorted(keys)


def word_runs(words: Sequence[str], n: int) -> Iterator[str]:
    """Every run of `n` consecutive words, joined as `prompt_keys` joins them."""
    for i in range(len(words) - n + 1 if n >= 1 else 0):
        yield " ".join(words[i:i + n])
