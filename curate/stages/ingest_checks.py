"""The checks ingest applies to a row's text and scores, one small function each."""

from __future__ import annotations

import math
import unicodedata
from typing import Any

# Characters that show nothing: spaces and separators (Z*), controls (Cc) and format
# characters (Cf: zero-width space and joiners, BOM, bidi marks). Text made only of
# them is empty to a reader and to a reward model.
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: empty, whitespace, or only zero-width/format characters.

    Stops at the first visible character, so ordinary text costs one lookup."""
    return all(unicodedata.category(ch) in _INVISIBLE for ch in text)


def check_response(name: str, value: Any) -> tuple[str, str] | None:
    """The rejection (reason, detail) of a response, or None when it is usable text."""
    if value is None:
        return ("missing_response", f"{name} is missing or null")
    if not isinstance(value, str):
        return ("response_not_string", f"{name} is a {type(value).__name__}, not a string")
    if is_blank(value):
        return ("empty_response", f"{name} is empty, whitespace or invisible characters only")
    return None


def check_score(name: str, value: Any) -> tuple[str, str] | None:
    """`invalid_score` for a score that is not a finite number (NaN, inf, text), else None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ("invalid_score", f"{name} is a {type(value).__name__}, not a number")
    if not math.isfinite(value):
        return ("invalid_score", f"{name} is {value}, not a finite number")
    return None


def check_prompt(prompt: Any) -> tuple[list[dict[str, str]] | None, tuple[str, str] | None]:
    """(the prompt's messages, its rejection or None). A message's content that is not
    text is `prompt_not_string`, naming its type (the caller keeps the raw value)."""
    if prompt is None or prompt == []:
        return None, ("no_prompt", "the row has no prompt")
    if not isinstance(prompt, list):
        return None, ("malformed_row", f"prompt is a {type(prompt).__name__}, not a list of "
                      "messages")
    msgs = []
    for i, m in enumerate(prompt):
        if not isinstance(m, dict):
            return None, ("malformed_row", f"prompt message {i} is a {type(m).__name__}")
        content, role = m.get("content"), m.get("role")
        if not isinstance(role, str):
            return None, ("malformed_row", f"prompt message {i} has no text role")
        if content is None:
            return None, ("malformed_row", f"prompt message {i} ({role}) has no content")
        if not isinstance(content, str):
            return None, ("prompt_not_string", f"prompt message {i} ({role}) is a "
                          f"{type(content).__name__}, not a string (kept in meta.raw_prompt)")
        msgs.append({"role": role, "content": content})
    if not any(m["role"] == "user" and not is_blank(m["content"]) for m in msgs):
        return msgs, ("no_prompt", "the prompt has no non-empty user message")
    return msgs, None
