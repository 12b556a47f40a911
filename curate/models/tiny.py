"""A tiny random Qwen2.5-VL and a byte-level BPE tokenizer with Qwen's special tokens.

Built in memory, offline, in well under a second: for tests and for trying the
training code without downloading a 7B model. The token ids of the special
tokens, the model config and the image processor agree with each other the way
they do in the real `Qwen/Qwen2.5-VL-*` checkpoints, so code that works on the
tiny model works on the real one. Use the name `tiny-qwen2.5-vl` wherever a model
path is expected (`curate train --model tiny-qwen2.5-vl`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_NAME = "tiny-qwen2.5-vl"

# Qwen2.5-VL's special tokens, in Qwen's order (ids follow the 256 byte symbols).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The Qwen2-VL chat template, reduced to string contents (which the real one accepts too).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Images are resized to between 56x56 and 112x112 pixels: at most 16 patches, 4 tokens.
TINY_MIN_PIXELS = 56 * 56
TINY_MAX_PIXELS = 112 * 112


def build_tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer (256 byte symbols, no merges) plus the Qwen special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {s: i for i, s in enumerate(sorted(byte_symbols))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_image_processor() -> Any:
    """Qwen's image processor without torchvision (the PIL backend), small images."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    return Qwen2VLImageProcessorPil(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)


def tiny_config(tokenizer: Any, hidden: int = 64, layers: int = 2) -> Any:
    """A Qwen2.5-VL config whose special token ids are the tokenizer's."""
    from transformers import Qwen2_5_VLConfig

    ids = tokenizer.convert_tokens_to_ids
    heads = 4
    head_dim = hidden // heads
    # mrope splits the rotary half-dimension into temporal, height and width sections.
    t = head_dim // 2 - 2 * (head_dim // 2 // 3)
    mrope = [t, head_dim // 2 // 3, head_dim // 2 // 3]
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                "mrope_section": mrope},
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden,  # the merger projects into the text hidden size
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def build_tiny_qwen2_5_vl(seed: int = 0, hidden: int = 64, layers: int = 2) -> tuple[Any, Any, Any]:
    """(Qwen2_5_VLModel, tokenizer, image processor), random weights from `seed`."""
    import torch
    from transformers import Qwen2_5_VLModel

    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer, hidden=hidden, layers=layers)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG where it was
        torch.manual_seed(seed)
        model = Qwen2_5_VLModel(config)
    model.eval()
    return model, tokenizer, build_tiny_image_processor()


def save_tiny_qwen2_5_vl(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny model as a normal checkpoint folder (config, safetensors, tokenizer)."""
    path = Path(path)
    model, tokenizer, processor = build_tiny_qwen2_5_vl(seed)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    processor.save_pretrained(path)
    return path
