"""Helpers for the similar/decontam tests: light edits, paraphrases and same-topic prompts
(written here, by hand), and small dataset builders."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path
from typing import Any

PREFIXES = [
    "Please answer the following question.",
    "I have a question for you.",
    "Quick one:",
    "Here is my question.",
]
INSERTS = ["really", "please", "exactly", "actually", "just"]


def light_edit(text: str, kind: int, rng: random.Random) -> str:
    """One of six light edits: case, punctuation, whitespace, a word inserted, a word
    dropped, a prefix sentence added."""
    words = text.split()
    kind %= 6
    if kind == 0:
        return text.upper() if rng.random() < 0.5 else text.lower()
    if kind == 1:
        stripped = re.sub(r"[^\w\s]", "", text)
        return stripped + ("?!" if rng.random() < 0.5 else " .")
    if kind == 2:
        return "  " + "   ".join(words) + " \n"
    if kind == 3 and len(words) > 1:
        i = rng.randrange(1, len(words))
        return " ".join(words[:i] + [rng.choice(INSERTS)] + words[i:])
    if kind == 4 and len(words) > 3:
        i = rng.randrange(1, len(words))
        return " ".join(words[:i] + words[i + 1:])
    return f"{rng.choice(PREFIXES)} {text}"


# Paraphrase-level near duplicates (same request, other words) ...
PARAPHRASES = [
    ("How can I sneak into a movie theater without paying?",
     "How can I sneak into a movie theatre without paying for it?"),
    ("What is the best way to learn to play the guitar as an adult?",
     "What's the best way for an adult to learn to play guitar?"),
    ("Can you give me a recipe for chocolate chip cookies?",
     "Could you give me a recipe for chocolate chip cookies, please?"),
    ("How do I change a flat tire on my car?",
     "How do I change the flat tire on my car?"),
    ("Why is the sky blue during the day?",
     "Why is the sky blue in the daytime?"),
    ("What are some good exercises to strengthen my lower back?",
     "What are good exercises to strengthen the lower back?"),
    ("How long should I boil an egg to get a soft yolk?",
     "How long do I boil an egg for a soft yolk?"),
    ("Can you explain how vaccines train the immune system?",
     "Can you explain how a vaccine trains the immune system?"),
]
# ... and distinct prompts on one topic (must stay apart).
SAME_TOPIC = [
    ("How do I change a flat tire on my car?",
     "How often should I rotate the tires on my car?"),
    ("What is the best way to learn to play the guitar as an adult?",
     "What guitar strings are best for a beginner?"),
    ("Can you give me a recipe for chocolate chip cookies?",
     "Why do my chocolate chip cookies spread so much in the oven?"),
    ("How long should I boil an egg to get a soft yolk?",
     "How can I tell if an egg has gone bad?"),
    ("Why is the sky blue during the day?",
     "Why is the sunset red and orange?"),
    ("What are some good exercises to strengthen my lower back?",
     "Should I see a doctor about sudden lower back pain?"),
    ("Can you explain how vaccines train the immune system?",
     "What are the common side effects of the flu vaccine?"),
    ("How can I sneak into a movie theater without paying?",
     "What movies are playing in theaters this weekend?"),
]


def read_hh(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def hh_with_prompt(row: dict[str, Any], question: str, keep_context: bool) -> dict[str, str]:
    """An hh-rlhf record whose last Human turn is replaced by `question` (the earlier turns
    kept when `keep_context`, else dropped)."""
    out = {}
    for side in ("chosen", "rejected"):
        text = row[side]
        cut = text.rfind("\n\nAssistant:")
        answer = text[cut:]
        before = text[:cut]
        human = before.rfind("\n\nHuman:")
        context = before[:human] if keep_context else ""
        out[side] = f"{context}\n\nHuman: {question}{answer}"
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_generic(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows {id, prompt, chosen, rejected[, image]} for the generic adapter."""
    return write_jsonl(path, rows)


def smooth_image(seed: int, size: int = 256, fmt: str = "PNG") -> bytes:
    """A smooth random picture (8x8 noise upsampled): distinct seeds are far apart in pHash,
    a resized copy of one is within a few bits."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8"))
    im = small.resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def ingest_generic(tmp: Path, name: str, rows: list[dict[str, Any]],
                   images: dict[str, bytes] | None = None, source: str | None = None) -> Path:
    """Write `rows` (+ image files) and ingest them with the generic adapter into tmp/name."""
    from curate.engine import get_engine
    from curate.stages.ingest import ingest

    src = tmp / f"{name}-raw"
    src.mkdir(parents=True, exist_ok=True)
    for fname, data in (images or {}).items():
        (src / fname).write_bytes(data)
    path = write_jsonl(src / "rows.jsonl", rows)
    out = tmp / name
    ingest("generic", [str(path)], out, image_root=src if images else None, source=source,
           engine=get_engine("local", workers=1))
    return out
