"""Builders for tests: tiny random models of the paper's three families, booted through the bridge.

The tokenizer is SmolLM2's (from the package cache) with the family's chat template and
turn-marker tokens attached, so formatting and positions are exercised per template
style without any download.
"""

from __future__ import annotations

import copy

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma2Config, LlamaConfig, Qwen2Config

from lowres_safety._runtime.batching import left_pad
from lowres_safety.models import boot, default_folder, encode_chat

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + "
    "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{'<start_of_turn>model\n'}}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
FAMILIES = {
    # family: (config class, TransformerLens architecture id, chat template, extra special tokens)
    "qwen2": (Qwen2Config, "Qwen/Qwen2.5-0.5B-Instruct", CHATML, []),
    "gemma2": (Gemma2Config, "google/gemma-2-2b-it", GEMMA, ["<start_of_turn>", "<end_of_turn>"]),
    "llama": (LlamaConfig, "meta-llama/Llama-3.2-1B-Instruct", LLAMA3,
              ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
}


def build_tokenizer(family: str = "qwen2"):
    _, _, template, specials = FAMILIES[family]
    tok = AutoTokenizer.from_pretrained(default_folder())
    if specials:
        tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = template
    return tok


def build_hf(family: str = "qwen2", vocab_size: int = 49152, seed: int = 0, **overrides):
    cls = FAMILIES[family][0]
    cfg = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if family == "gemma2":
        cfg["head_dim"] = 16
    cfg.update(overrides)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cls(**cfg)).eval()


def save_chat_model(folder, family: str = "qwen2", **overrides):
    """A tiny random chat model and its tokenizer saved as a local folder: what ``--model PATH`` loads."""
    tok = build_tokenizer(family)
    build_hf(family, vocab_size=len(tok), **overrides).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_model(family: str = "qwen2", *, seed: int = 0, keep_reference: bool = False, **overrides):
    """Tiny random bridge; with ``keep_reference`` also an untouched copy of the HF model."""
    tok = build_tokenizer(family)
    hf = build_hf(family, vocab_size=len(tok), seed=seed, **overrides)
    reference = copy.deepcopy(hf) if keep_reference else None
    bridge = boot(hf, tok, FAMILIES[family][1])
    return (bridge, reference) if keep_reference else bridge


def reference_acts(model, prompts, layers, positions):
    """Unbatched, unpadded extraction with run_with_cache: the ground truth for ``extract``."""
    from lowres_safety.models import encode_chat, position_offset

    rows = []
    for text in prompts.texts:
        prompt = encode_chat(model.tokenizer, text)
        _, cache = model.run_with_cache(torch.tensor([prompt.ids]))
        offsets = [position_offset(prompt, p) for p in positions]
        rows.append(torch.stack([cache[f"blocks.{l}.hook_resid_post"][0, offsets] for l in layers]))
    return torch.stack(rows).float()


def chat_batch(model, texts):
    """Chat-formatted, left-padded input ids and attention mask for ``texts``."""
    return left_pad([encode_chat(model.tokenizer, t).ids for t in texts], model.tokenizer.pad_token_id)


def rendered_dom(page) -> str:
    """The DOM of an HTML file after headless Chromium ran its scripts (skips without chromium, fails under CI)."""
    import os
    import shutil
    import subprocess

    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def check_report_renders(page) -> str:
    """A report opened in Chromium: every plotly figure drew its plot, every table sits in a scrolling box."""
    import re

    dom = rendered_dom(page)
    figures = re.findall(r'<div id="[^"]+" class="plotly-graph-div[^"]*"', dom)
    drawn = dom.count('class="main-svg"')
    assert figures and drawn >= len(figures), (len(figures), drawn)  # plotly draws 2+ svgs per figure
    assert dom.count("<table") == len(re.findall(r'<div class="scroll"><table', dom))
    return dom
