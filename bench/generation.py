"""Benchmark of routed generation against plain generation and Hugging Face's own; prints one JSON object.

``routed_vs_plain``: wall time of greedy generation under the gate's routing hooks over
plain generation without hooks, same prompts, same batches, same number of new tokens
(end-of-turn stopping off, so both generate exactly the budget); target <= 1.15.
``ours_vs_hf_generate``: our generation (``plain``: no hooks; ``routed``: the gate's
hooks) over Hugging Face ``generate`` on an untouched copy of the same weights (greedy,
KV cache, no hooks, its default attention kernel; end-of-turn suppressed so it also
generates exactly the budget), same batches: the physical limit for this model, so the
bridge's own cost shows; target <= 1.3 for ``routed``.
``gate_ms_per_prompt``: the gate's own decision (projection, standardisation, readout)
on the last-token activations, per prompt. All measured in this run, alternating
Hugging Face, plain and routed passes so machine noise falls on all three.

    python bench/generation.py            # PolyRefuse test, 16 per class in en and ar, 32 new tokens
    python bench/generation.py --quick    # built-in demo, 4 per class in en and sw, 16 new tokens

Prefill dominates on long prompts: Thai or Yoruba PolyRefuse prompts run to hundreds of
tokens, so 32 of them take minutes per pass on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from lowres_safety import data, extract, hooks, load_model  # noqa: E402
from lowres_safety import directions as dirs  # noqa: E402
from lowres_safety.gate import Gate  # noqa: E402
from lowres_safety.generation import generate, prompt_batches  # noqa: E402
from lowres_safety.models import default_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Multilingual-Refusal"
LAYER = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    tokens = 16 if args.quick else 32
    repeats = args.repeats or (1 if args.quick else 2)
    model = load_model()
    if args.quick:
        source = data.load_builtin(["en", "de", "fr", "zh"])
        prompts = data.load_builtin(["en", "sw"], n_per_class=4, seed=1)
    else:
        source = data.load_polyrefuse(ROOT, ["en", "de", "fr", "zh"], split="train", n_per_class=16, seed=0)
        prompts = data.load_polyrefuse(ROOT, ["en", "ar"], split="test", n_per_class=16, seed=1)
    acts = extract(model, source, [LAYER], ("t_post_inst",), progress=False)
    gate = Gate(seed=0).fit(acts, LAYER, "t_post_inst", ["en", "de", "fr", "zh"])
    v = dirs.unit(dirs.pooled(acts)[0, 0])
    routed = hooks.route(gate, v, hooks.default_alpha(acts, v, LAYER), n_layers=model.cfg.n_layers)

    def timed(hook_list) -> float:
        t = time.perf_counter()
        generate(model, prompts, hook_list, max_new_tokens=tokens, batch_size=32, stop_at_eos=False, progress=False)
        return time.perf_counter() - t

    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(default_folder(), dtype=torch.float32).eval()
    pad = model.tokenizer.pad_token_id
    batches = [(ids, mask) for _, ids, mask in prompt_batches(model, prompts, 32, None)]

    @torch.no_grad()
    def timed_hf() -> float:
        t = time.perf_counter()
        for ids, mask in batches:
            hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                        do_sample=False, pad_token_id=pad)
        return time.perf_counter() - t

    timed([]), timed_hf()  # warm-up
    plain, route, reference = [], [], []
    for _ in range(repeats):
        reference.append(timed_hf())
        plain.append(timed([]))
        route.append(timed(routed))
    x = acts.at(LAYER, "t_post_inst")
    reps = 200
    t = time.perf_counter()
    for _ in range(reps):
        gate.margin(x)
    gate_ms = (time.perf_counter() - t) / reps / len(x) * 1e3
    print(json.dumps({
        "prompts": len(prompts), "new_tokens": tokens, "repeats": repeats,
        "plain_s": min(plain), "routed_s": min(route), "routed_vs_plain": min(route) / min(plain),
        "target_routed_vs_plain": 1.15, "hf_generate_s": min(reference),
        "ours_vs_hf_generate": {"plain": min(plain) / min(reference), "routed": min(route) / min(reference)},
        "target_ours_vs_hf_generate_routed": 1.3, "gate_ms_per_prompt": gate_ms,
        "routing_overhead_ms_per_prompt": (min(route) - min(plain)) / len(prompts) * 1e3,
        "threads": torch.get_num_threads(),
    }, indent=1))


if __name__ == "__main__":
    main()
