"""(prompt messages, response, images) -> token ids the reward model reads.

One `PairEncoder` serves training and scoring, so a checkpoint scores exactly the
text it was trained on. Three layouts:

- `chat`: the tokenizer's chat template (Qwen, Llama, ...): prompt rendered with
  the generation prompt, then the response and the template's end-of-turn tokens;
  the reward is read at the last token.
- `plain`: causal LMs without a template: `User: ...\\n\\nAssistant: response<eos>`.
- `pair`: encoders (BERT, MiniLM): `[CLS] prompt [SEP] response [SEP]` with
  segment ids, the way the tokenizer itself joins a text pair.

Length: when a sequence is too long the prompt loses tokens from the left (the
oldest turns go first) so the response survives; image placeholder tokens are never
cut (the vision features must match them one for one). Only a response that alone
overflows is cut, from the right, keeping its end-of-turn tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Messages = Sequence[dict[str, str]]
# (prompt messages, response, images): one sequence a reward model encodes and scores
Item = tuple[Messages, str, Sequence[dict[str, Any]] | None]

VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
_IMAGE_TAG = re.compile(r"<image>\s*")


@dataclass
class Encoded:
    """One tokenized (prompt, response) sequence."""

    input_ids: list[int]
    token_type_ids: list[int] | None = None
    n_images: int = 0
    prompt_truncated: bool = False
    response_truncated: bool = False
    over_length: bool = False  # protected image tokens alone exceed max_length


@dataclass
class ImageInputs:
    """The image processor's output for the images of one pair (shared by both responses)."""

    pixel_values: Any  # torch.Tensor (patches, patch_dim)
    image_grid_thw: Any  # torch.Tensor (n_images, 3)
    tokens_per_image: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Layout:
    """Special tokens a tokenizer puts around one text or a text pair, found by probing."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    type_a: int = 0
    type_b: int = 1

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def _probe_layout(tokenizer: Any, pair: bool) -> _Layout:
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    b = tokenizer("b", add_special_tokens=False)["input_ids"]
    enc = tokenizer("a", "b") if pair else tokenizer("a")
    ids = list(enc["input_ids"])
    i = _find(ids, a, 0)
    if not pair:
        return _Layout(tuple(ids[:i]), (), tuple(ids[i + len(a):]))
    j = _find(ids, b, i + len(a))
    types = enc.get("token_type_ids") or [0] * len(ids)
    return _Layout(tuple(ids[:i]), tuple(ids[i + len(a):j]), tuple(ids[j + len(b):]),
                   type_a=types[i], type_b=types[j])


def _find(ids: list[int], sub: list[int], start: int) -> int:
    for k in range(start, len(ids) - len(sub) + 1):
        if ids[k:k + len(sub)] == sub:
            return k
    raise ValueError("cannot find where the tokenizer puts the text among its special tokens")


def plain_transcript(messages: Messages) -> str:
    """`User: ...\\n\\nAssistant: ...` for tokenizers without a chat template."""
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'].title())}: {m['content']}"
                       for m in messages)


def decode_image(data: bytes) -> Any:
    """Decode image bytes to RGB (ingest already checked size and integrity)."""
    from curate.images import open_allowed

    with open_allowed(data) as im:
        return im.convert("RGB")


class PairEncoder:
    """Turns (prompt, response, images) into token ids within `max_length`.

    `layout` is `chat`, `plain` or `pair` (see the module docstring); `vision`
    turns on image placeholders (Qwen2-VL style) and requires an image processor.
    """

    def __init__(
        self,
        tokenizer: Any,
        layout: str,
        max_length: int,
        image_processor: Any = None,
        vision: bool = False,
        min_prompt_tokens: int = 32,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        if layout not in ("chat", "plain", "pair"):
            raise ValueError(f"unknown layout {layout!r}: chat, plain or pair")
        if layout == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("layout 'chat' needs a tokenizer with a chat template")
        if vision and image_processor is None:
            raise ValueError("a vision backbone needs an image processor")
        self.tokenizer = tokenizer
        self.layout = layout
        self.max_length = max_length
        self.image_processor = image_processor
        self.vision = vision
        self.min_prompt_tokens = min_prompt_tokens
        self.image_size: dict[str, int] = {}
        if min_pixels is not None:
            self.image_size["shortest_edge"] = min_pixels
        if max_pixels is not None:
            self.image_size["longest_edge"] = max_pixels
        # a chat template carries its own special tokens
        self.layout_tokens = (_Layout((), (), ()) if layout == "chat"
                              else _probe_layout(tokenizer, pair=layout == "pair"))
        self.eos_id = tokenizer.eos_token_id
        if vision:
            ids = tokenizer.convert_tokens_to_ids
            self.image_token_id = ids("<|image_pad|>")
            self.vision_start_id = ids("<|vision_start|>")
            self.vision_end_id = ids("<|vision_end|>")
            self.merge = int(getattr(image_processor, "merge_size", 2))

    # -- images --------------------------------------------------------------------
    def encode_images(self, images: Sequence[dict[str, Any]] | None) -> ImageInputs | None:
        """Run the image processor once for a pair's images (None if none or not a VL model)."""
        if not self.vision or not images:
            return None
        pics = [decode_image(im["bytes"]) for im in images]
        kw: dict[str, Any] = {}
        if self.image_size:
            proc_size = dict(getattr(self.image_processor, "size", {}) or {})
            kw["size"] = {k: v for k, v in proc_size.items() if v is not None} | self.image_size
        out = self.image_processor(images=pics, return_tensors="pt", **kw)
        grid = out["image_grid_thw"]
        per = [int(g.prod()) // self.merge**2 for g in grid]
        return ImageInputs(out["pixel_values"], grid, per)

    # -- text ----------------------------------------------------------------------
    def _messages(self, messages: Messages, n_images: int) -> list[dict[str, str]]:
        """Copies of the messages with image tags placed (VL) or removed (text-only backbone)."""
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self.vision and n_images:
            return _place_images(msgs, n_images)
        for m in msgs:
            m["content"] = _IMAGE_TAG.sub("", m["content"])
        return msgs

    def _prompt_text(self, msgs: list[dict[str, str]]) -> str:
        if self.layout == "chat":
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                      tokenize=False)
        text = plain_transcript(msgs)
        return text + "\n\nAssistant:" if self.layout == "plain" else text

    def _response_parts(self, msgs: list[dict[str, str]], prompt_text: str,
                        response: str) -> tuple[str, str]:
        """(response content, the end-of-turn text the layout puts after it)."""
        if self.layout == "plain":
            return " " + response, ""
        if self.layout == "pair":
            return response, ""
        full = self.tokenizer.apply_chat_template(
            [*msgs, {"role": "assistant", "content": response}], tokenize=False)
        tail = full[len(prompt_text):] if full.startswith(prompt_text) else response
        k = tail.find(response)
        return (response, tail[k + len(response):]) if k >= 0 else (tail, "")

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def encode(
        self,
        messages: Messages,
        response: str,
        image_inputs: ImageInputs | None = None,
    ) -> Encoded:
        """Tokenize one sequence; `image_inputs` (from `encode_images`) sizes the placeholders."""
        n_img = len(image_inputs.tokens_per_image) if image_inputs is not None else 0
        msgs = self._messages(messages, n_img)
        prompt_text = self._prompt_text(msgs)
        prompt, protected = self._expand_images(self._ids(prompt_text), image_inputs)
        content, end = self._response_parts(msgs, prompt_text, response)
        resp, tail = self._ids(content), self._ids(end)
        if self.layout == "plain" and self.eos_id is not None:
            tail = tail + [self.eos_id]
        enc = self._fit(prompt, protected, resp, tail)
        enc.n_images = n_img
        return enc

    def _expand_images(self, ids: list[int], image_inputs: ImageInputs | None
                       ) -> tuple[list[int], list[bool]]:
        if image_inputs is None:
            return ids, [False] * len(ids)
        out: list[int] = []
        protected: list[bool] = []
        per = iter(image_inputs.tokens_per_image)
        inside = False
        for t in ids:
            if t == self.vision_start_id:
                inside = True
            if t == self.image_token_id:
                k = next(per)
                out.extend([t] * k)
                protected.extend([True] * k)
            else:
                out.append(t)
                protected.append(inside)
            if t == self.vision_end_id:
                inside = False
        return out, protected

    def _fit(self, prompt: list[int], protected: list[bool], resp: list[int],
             tail: list[int]) -> Encoded:
        lay = self.layout_tokens
        budget = self.max_length - lay.n_special
        n_protected = sum(protected)
        prompt_min = min(len(prompt), n_protected + self.min_prompt_tokens)
        resp_max = max(budget - prompt_min - len(tail), 1)
        response_truncated = len(resp) > resp_max
        resp = resp[:resp_max] + tail
        over = len(prompt) + len(resp) - budget
        prompt_truncated = over > 0
        if over > 0:  # drop the oldest unprotected prompt tokens
            keep: list[int] = []
            for t, p in zip(prompt, protected, strict=True):
                if over > 0 and not p:
                    over -= 1
                    continue
                keep.append(t)
            prompt = keep
        ids = [*lay.prefix, *prompt, *lay.middle, *resp, *lay.suffix]
        types = None
        if self.layout == "pair":
            n_a = len(lay.prefix) + len(prompt) + len(lay.middle)
            types = [lay.type_a] * n_a + [lay.type_b] * (len(ids) - n_a)
        return Encoded(ids, types, prompt_truncated=prompt_truncated,
                       response_truncated=response_truncated, over_length=over > 0)


def _place_images(msgs: list[dict[str, str]], n_images: int) -> list[dict[str, str]]:
    """Put one vision block per image: at `<image>` tags in order, the rest before the first
    user message's text."""
    left = n_images
    for m in msgs:
        if m["role"] != "user":
            continue

        def sub(_: re.Match[str]) -> str:
            nonlocal left
            if left == 0:
                return ""
            left -= 1
            return VISION_BLOCK

        m["content"] = _IMAGE_TAG.sub(sub, m["content"])
    if left:
        first = next((m for m in msgs if m["role"] == "user"), msgs[0])
        first["content"] = VISION_BLOCK * left + first["content"]
    return msgs

