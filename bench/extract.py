"""Benchmark of ``lowres_safety.extract`` on multilingual PolyRefuse prompts; prints one JSON object.

(a) ``extract_vs_plain``: extract's throughput (prompt tokens/s) over a plain Hugging Face
    forward pass without hooks on the same length-grouped batches (target >= 1.2: extraction
    stops after the deepest requested layer and never computes logits).
(b) ``grouped_vs_interleaved``: length-grouped batching over arrival order with the languages
    interleaved, same batch size (target >= 1.5), with the padding fraction of each.
(c) ``memory_scaling_ratio``: growth of peak resident memory from N to 4N prompts over the
    growth of the returned tensor (target <= 1.5); each size runs in a fresh process, on
    copies of 32 English prompts at 8 positions (so the tensor grows by 100+ MB while the
    batches stay the same), starting from the same live memory (the allocator's free
    pages are returned to the system before the peak is reset).

Throughput figures are the minimum over ``--repeats`` alternating runs of the three.

    python bench/extract.py            # 64 per class in en, th, yo, ar; memory 128 -> 512 prompts
    python bench/extract.py --quick    # 8 per class (64 prompts, 4 batches); memory 64 -> 256 prompts
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from lowres_safety import data, extract, load_model  # noqa: E402
from lowres_safety._runtime.batching import left_pad, length_batches  # noqa: E402
from lowres_safety.models import default_folder, encode_chat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Multilingual-Refusal"
LANGUAGES = ["en", "th", "yo", "ar"]
POSITIONS = ("t_inst", "t_post_inst")
MEMORY_POSITIONS = ("t_inst", "t_post_inst", "t_inst-1", "t_inst-2", -2, -3, -4, -5)
MEMORY_BASE = 16  # English prompts per class, copied to make N and 4N


def interleaved(prompts: data.PromptSet) -> data.PromptSet:
    """Arrival order of a balanced multilingual sample: languages and classes round-robin."""
    frame = prompts.frame.copy()
    frame["_k"] = frame.groupby(["language", "subset"]).cumcount()
    frame = frame.sort_values(["_k", "subset", "language"], kind="stable").drop(columns="_k")
    return data.PromptSet(frame.reset_index(drop=True), prompts.origin)


def padding_fraction(lengths: list[int], batches) -> float:
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded


@torch.no_grad()
def plain_forward_seconds(hf, encoded, batches, pad_id) -> float:
    t = time.perf_counter()
    for idx in batches:
        ids, mask = left_pad([encoded[i].ids for i in idx], pad_id)
        hf(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - t


def _peak_rss() -> int:
    """Peak resident set size in bytes since the last reset (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc), so RSS is live memory only."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def memory_child(n: int) -> None:
    """Extract n prompts (all layers, 8 positions) and print peak RSS and the tensor size.

    The n prompts are copies of one base sample, so N and 4N see the same batch shapes and
    the same per-batch peak: only what is kept across batches can make the peak grow.
    """
    base = data.load_polyrefuse(ROOT, ["en"], split="train", n_per_class=MEMORY_BASE, seed=0)
    prompts = data.PromptSet.concat([base] * (n // len(base)))
    model = load_model()
    extract(model, base, "all", MEMORY_POSITIONS, batch_size=16, progress=False)  # warm-up: same batch shapes
    _release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    start = _peak_rss()
    acts = extract(model, prompts, "all", MEMORY_POSITIONS, batch_size=16, progress=False)
    rss = _peak_rss()
    print(json.dumps({"n": len(prompts), "start_rss": start, "peak_rss": rss, "tensor_bytes": acts.acts.numel() * 4}))


def measure_memory(n: int) -> dict:
    out = {}
    for size in (n, 4 * n):
        cmd = [sys.executable, __file__, "--memory-child", str(size)]
        out[size] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    d_rss = out[4 * n]["peak_rss"] - out[n]["peak_rss"]
    d_tensor = out[4 * n]["tensor_bytes"] - out[n]["tensor_bytes"]
    return {"memory_n": n, "memory_start_rss_mb": {k: v["start_rss"] / 2**20 for k, v in out.items()},
            "memory_peak_rss_mb": {k: v["peak_rss"] / 2**20 for k, v in out.items()},
            "memory_tensor_mb": {k: v["tensor_bytes"] / 2**20 for k, v in out.items()},
            "memory_scaling_ratio": d_rss / d_tensor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child)
    per_class = 8 if args.quick else 64

    prompts = data.load_polyrefuse(ROOT, LANGUAGES, split="train", n_per_class=per_class, seed=0)
    arrival = interleaved(prompts)
    model = load_model()
    tok = model.tokenizer
    encoded = [encode_chat(tok, t) for t in arrival.texts]
    lengths = [len(e) for e in encoded]
    n_tokens = sum(lengths)
    grouped_batches = length_batches(lengths, args.batch_size, True)
    arrival_batches = length_batches(lengths, args.batch_size, False)

    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(default_folder(), dtype=torch.float32).eval()
    extract(model, arrival.where(language="en"), "all", POSITIONS, progress=False)  # warm-up
    plain, grouped, arrival_order = [], [], []
    for _ in range(args.repeats):
        plain.append(plain_forward_seconds(hf, encoded, grouped_batches, tok.pad_token_id))
        t = time.perf_counter()
        extract(model, arrival, "all", POSITIONS, batch_size=args.batch_size, progress=False)
        grouped.append(time.perf_counter() - t)
        t = time.perf_counter()
        extract(model, arrival, "all", POSITIONS, batch_size=args.batch_size, group_by_length=False, progress=False)
        arrival_order.append(time.perf_counter() - t)
    plain_s, grouped_s, interleaved_s = min(plain), min(grouped), min(arrival_order)

    file_lengths = [len(encode_chat(tok, t)) for t in prompts.texts]
    result = {
        "prompts": len(arrival),
        "languages": LANGUAGES,
        "prompt_tokens": n_tokens,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "plain_hf_tokens_per_s": n_tokens / plain_s,
        "extract_tokens_per_s": n_tokens / grouped_s,
        "extract_vs_plain": plain_s / grouped_s,
        "interleaved_tokens_per_s": n_tokens / interleaved_s,
        "grouped_vs_interleaved": interleaved_s / grouped_s,
        "padding_fraction_grouped": padding_fraction(lengths, grouped_batches),
        "padding_fraction_interleaved": padding_fraction(lengths, arrival_batches),
        "padding_fraction_file_order_batch4": padding_fraction(file_lengths, length_batches(file_lengths, 4, False)),
    }
    result.update(measure_memory(64 if args.quick else 128))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
