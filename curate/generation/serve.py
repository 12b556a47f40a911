"""A real OpenAI-compatible server on this machine, offline, for tests and benchmarks.

`transformers serve` loads a model's processor with `AutoProcessor`, which for
Qwen2.5-VL needs torchvision (its video processor); CPU machines without it cannot
serve the tiny Qwen2.5-VL. A tiny random LLaVA (CLIP vision tower, Qwen2 text
model, the byte-level tokenizer of `curate.models.tiny` plus an `<image>` token)
has a processor with a PIL image backend, so `transformers serve` runs it on a CPU
and really decodes the base64 images it is sent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

TINY_LLAVA_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_llava(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random LLaVA checkpoint (config, safetensors, processor) to `path`."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from curate.models.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.chat_template = TINY_LLAVA_TEMPLATE
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, image_size=28, patch_size=14,
                              projection_dim=32)
    text = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text,
                      image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-1, vision_feature_select_strategy="full")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(cfg).eval()
    images = CLIPImageProcessorPil(size={"shortest_edge": 28},
                                   crop_size={"height": 28, "width": 28})
    proc = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=14,
                          vision_feature_select_strategy="full",
                          chat_template=TINY_LLAVA_TEMPLATE, num_additional_image_tokens=1)
    path = Path(path)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"no answer from {url} within {timeout:.0f} s")


@contextmanager
def transformers_serve(model: str | Path, *, port: int | None = None, log: Path | None = None,
                       timeout: float = 300.0, extra_args: Sequence[str] = (),
                       ) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `transformers serve MODEL` on 127.0.0.1 (offline, CPU); yields (base URL, process)
    once it answers, and stops it afterwards. `extra_args` go to `transformers serve` as
    they are (e.g. `--continuous-batching`)."""
    port = port or free_port()
    cmd = [sys.executable, "-c", "from transformers.cli.transformers import main; main()",
           "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           *extra_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log_file = open(log, "w") if log else None  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log_file if log_file is not None else subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(url, proc, timeout)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log_file is not None:
            log_file.close()
