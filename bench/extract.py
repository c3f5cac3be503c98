"""Benchmark of ``lowres_safety.extract`` on multilingual PolyRefuse prompts; prints one JSON object.

(a) ``extract_vs_plain``: extract's throughput (prompt tokens/s) over a plain Hugging Face
    forward pass without hooks on the same length-grouped batches (target >= 0.9).
(b) ``grouped_vs_interleaved``: length-grouped batching over arrival order with the languages
    interleaved, same batch size (target >= 1.5), with the padding fraction of each.
(c) ``memory_scaling_ratio``: growth of peak resident memory from N to 4N prompts over the
    growth of the returned tensor (target <= 1.5); each size runs in a fresh process.

    python bench/extract.py            # 64 per class in en, th, yo, ar (several minutes)
    python bench/extract.py --quick    # 4 per class, under two minutes
"""

from __future__ import annotations

import argparse
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
from lowres_safety.activations import left_pad, length_batches  # noqa: E402
from lowres_safety.models import _default_folder, encode_chat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Multilingual-Refusal"
LANGUAGES = ["en", "th", "yo", "ar"]
POSITIONS = ("t_inst", "t_post_inst")


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


def memory_child(n: int, per_class: int) -> None:
    """Extract n prompts (all layers, two positions) and print peak RSS and the tensor size.

    The n prompts are copies of one base sample, so N and 4N see the same batch shapes and
    the same per-batch peak: only what is kept across batches can make the peak grow.
    """
    base = data.load_polyrefuse(ROOT, LANGUAGES, split="train", n_per_class=per_class, seed=0)
    prompts = data.PromptSet.concat([base] * (n // len(base)))
    model = load_model()
    extract(model, base, "all", POSITIONS, batch_size=16, progress=False)  # warm-up: same batch shapes
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    acts = extract(model, prompts, "all", POSITIONS, batch_size=16, progress=False)
    rss = _peak_rss()
    print(json.dumps({"n": len(prompts), "peak_rss": rss, "tensor_bytes": acts.acts.numel() * 4}))


def measure_memory(n: int, per_class: int) -> dict:
    out = {}
    for size in (n, 4 * n):
        cmd = [sys.executable, __file__, "--memory-child", str(size), "--per-class", str(per_class)]
        out[size] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    d_rss = out[4 * n]["peak_rss"] - out[n]["peak_rss"]
    d_tensor = out[4 * n]["tensor_bytes"] - out[n]["tensor_bytes"]
    return {"memory_n": n, "memory_peak_rss_mb": {k: v["peak_rss"] / 2**20 for k, v in out.items()},
            "memory_tensor_mb": {k: v["tensor_bytes"] / 2**20 for k, v in out.items()},
            "memory_scaling_ratio": d_rss / d_tensor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--per-class", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    per_class = args.per_class or (4 if args.quick else 64)
    if args.memory_child:
        return memory_child(args.memory_child, per_class)
    torch.set_num_threads(torch.get_num_threads())

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

    hf = AutoModelForCausalLM.from_pretrained(_default_folder(), dtype=torch.float32).eval()
    extract(model, arrival.where(language="en"), "all", POSITIONS, progress=False)  # warm-up
    plain_s = plain_forward_seconds(hf, encoded, grouped_batches, tok.pad_token_id)

    t = time.perf_counter()
    extract(model, arrival, "all", POSITIONS, batch_size=args.batch_size, progress=False)
    grouped_s = time.perf_counter() - t
    t = time.perf_counter()
    extract(model, arrival, "all", POSITIONS, batch_size=args.batch_size, group_by_length=False, progress=False)
    interleaved_s = time.perf_counter() - t

    file_lengths = [len(encode_chat(tok, t)) for t in prompts.texts]
    result = {
        "prompts": len(arrival),
        "languages": LANGUAGES,
        "prompt_tokens": n_tokens,
        "batch_size": args.batch_size,
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
    n_memory = 16 if args.quick else 64
    result.update(measure_memory(n_memory, n_memory // (2 * len(LANGUAGES))))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
