"""Synthetic preference pairs for the reward-model tests (built in memory, deterministic)."""

from __future__ import annotations

import io
import random
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image

from curate import schema as S
from curate.images import image_record, inspect_image

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
WORDS = ["apple", "river", "stone", "cloud", "music", "paper", "light", "sugar", "horse", "glass"]


def image(color: str, size: tuple[int, int] = (64, 48)) -> dict[str, Any]:
    """A canonical image record of a plain PNG of one colour."""
    buf = io.BytesIO()
    Image.new("RGB", size, COLORS[color]).save(buf, "PNG")
    data = buf.getvalue()
    return image_record(data, inspect_image(data))


def pair_row(i: int, prompt: list[dict[str, str]], chosen: str, rejected: str,
             images: list[dict[str, Any]], source: str, category: str | None = None,
             **extra: Any) -> dict[str, Any]:
    pid = S.compute_pair_id(source, str(i), prompt, chosen, rejected,
                            [im["sha256"] for im in images])
    return {"pair_id": pid, "source": source, "source_id": str(i), "prompt": prompt,
            "chosen": chosen, "rejected": rejected, "images": images, "chosen_score": None,
            "rejected_score": None, "category": category, "meta": None, **extra}


def synthetic_pairs(n_image: int = 12, n_text: int = 12, seed: int = 0) -> pa.Table:
    """Image pairs and text-only pairs, interleaved so every batch mixes both. The chosen
    answer is polite and on topic, the rejected one curt; the words vary per pair."""
    rng = random.Random(seed)
    rows = []
    kinds = ["image"] * n_image + ["text"] * n_text
    kinds = [k for pair in zip(kinds[:n_image], kinds[n_image:], strict=False) for k in pair] \
        + kinds[2 * min(n_image, n_text):]
    for i, kind in enumerate(kinds):
        w1, w2 = rng.sample(WORDS, 2)
        if kind == "image":
            colour = rng.choice(list(COLORS))
            prompt = [{"role": "user", "content": f"<image>What is the {w1} next to?"}]
            images = [image(colour)]
        else:
            prompt = [{"role": "user", "content": f"Tell me about the {w1} and the {w2}."}]
            images = []
        chosen = f"Sure, happy to help: the {w1} is lovely."
        rejected = f"No. {w2}."
        rows.append(pair_row(i, prompt, chosen, rejected, images, f"synth-{kind}"))
    return pa.Table.from_pylist(rows, schema=S.PAIR_SCHEMA)


def items_of(table: pa.Table) -> list[tuple[Any, str, Any]]:
    rows = table.to_pylist()
    return [(r["prompt"], r["chosen"], r["images"]) for r in rows] + \
        [(r["prompt"], r["rejected"], r["images"]) for r in rows]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny models run faster on one thread: with two, OpenMP's spinning barriers make
    small ops 10-40x slower on a shared 2-core machine (measured). Restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
