"""GPU benchmark at the users' scale: a random model with Qwen2.5-7B-Instruct's configuration, in bfloat16.

Random weights cost the same compute as trained ones, so nothing is downloaded: the
configuration below is Qwen2.5-7B-Instruct's (28 layers, d_model 3584, 28 query and 4
key/value heads, vocabulary 152064). The tokenizer is a byte-level BPE trained here on
the built-in demo prompts, with Qwen's ChatML template (no tokenizer file is needed
either; its ids are a subset of the vocabulary, so the text is meaningless and the
compute is not). Prompts are the built-in demo set, which travels with the package. It
prints one JSON object:

- ``extraction``: prompt tokens/s of ``extract`` (every layer, two positions) and of a
  plain Hugging Face forward of an untouched copy of the weights on the same batches,
  their ratio, and the peak GPU memory of each;
- ``generation``: routed greedy generation (the gate's hooks) and plain generation
  against Hugging Face ``generate`` on the same batches and token budget, and peak memory;
- ``largest_batch``: the largest batch of ~512-token prompts that extraction, and
  routed generation of 64 tokens, fit in GPU memory (doubled from 8 until out of memory);
- ``device_map``: with two or more GPUs, a 4-layer model of the same width saved to a
  temporary folder and loaded with ``load_model(folder, device_map="auto")``: which
  devices its blocks landed on, and whether hooks on every block fired in extraction
  and in routed generation.

Without CUDA it says so and exits 0. ``--tiny`` runs the same code on a 4-layer,
width-64 configuration (on the CPU when there is no GPU) to check the script itself.
On the lent GPU machines TransformerLens is not installed: carry its wheel (and those
of any dependency missing there) as the device README says.

    python bench/gpu.py                # one GPU: ~5-10 min on an H100
    python bench/gpu.py --tiny         # anywhere, about a minute on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

QWEN25_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6,
                 rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu", use_sliding_window=False)
TINY = dict(QWEN25_7B, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2)
ARCHITECTURE = "Qwen/Qwen2.5-7B-Instruct"  # only picks TransformerLens's adapter; nothing is fetched
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SOURCE = ["en", "de", "fr", "zh"]


def chat_tokenizer():
    """A byte-level BPE tokenizer trained on the built-in prompts, with the ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lowres_safety import data

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(data.load_builtin().texts + ["user assistant system"], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=specials[1:])
    tok.chat_template = CHATML
    return tok


def random_model(config: dict, dtype, device: str, seed: int = 0):
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(Qwen2Config(**config), dtype=dtype).eval()


class Gpu:
    """Synchronised wall time and peak memory of a block of work (the CPU: wall time only)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def run(self, fn) -> tuple[float, float | None]:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None
        return time.perf_counter() - t, peak


def long_prompts(n: int, tokenizer, target: int = 512):
    """``n`` copies of one instruction of about ``target`` tokens (built-in prompts joined)."""
    from lowres_safety import data
    from lowres_safety.models import encode_chat

    texts, parts = data.load_builtin().texts, []
    while len(encode_chat(tokenizer, " ".join(parts or ["x"]))) < target:
        parts.append(texts[len(parts) % len(texts)])
    frame = data.load_builtin(["en"], n_per_class=1).frame.iloc[[0] * n].reset_index(drop=True)
    frame = frame.assign(text=" ".join(parts), id=[f"long{i}" for i in range(n)],
                         source_id=[f"long{i}" for i in range(n)])
    return data.PromptSet(frame, "long synthetic prompts")


def largest_batch(fn, start: int, cap: int) -> dict:
    """Double the batch from ``start`` while ``fn(batch)`` fits in memory."""
    ok, peak, batch = None, None, start
    while batch <= cap:
        try:
            _, peak_now = fn(batch)
            ok, peak = batch, peak_now
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        batch *= 2
    return {"largest": ok, "peak_gib_at_largest": peak, "tried_up_to": min(batch, cap), "cap": cap}


def routed_hooks(model, layer: int):
    from lowres_safety import data, directions, extract, hooks
    from lowres_safety.gate import Gate

    acts = extract(model, data.load_builtin(SOURCE, n_per_class=8), [layer], ("t_post_inst",), progress=False)
    gate = Gate(seed=0).fit(acts, layer, "t_post_inst", SOURCE)
    v = directions.unit(directions.pooled(acts)[0, 0])
    return hooks.route(gate, v, 8.0, n_layers=model.cfg.n_layers)  # α fixed: a random model has no gap


def bench_extraction(model, hf, prompts, timer: Gpu, batch_size: int) -> dict:
    from lowres_safety import extract
    from lowres_safety.generation import prompt_batches

    batches = [(ids, mask) for _, ids, mask in prompt_batches(model, prompts, batch_size, None)]
    tokens = int(sum(int(mask.sum()) for _, mask in batches))

    @torch.no_grad()
    def plain():
        for ids, mask in batches:
            hf(input_ids=ids, attention_mask=mask)

    def ours():
        extract(model, prompts, "all", ("t_inst", "t_post_inst"), batch_size=batch_size, progress=False)

    plain(), ours()  # warm-up
    (p, p_mem), (o, o_mem) = timer.run(plain), timer.run(ours)
    return {"prompts": len(prompts), "prompt_tokens": tokens, "batch_size": batch_size,
            "plain_hf_tokens_per_s": tokens / p, "extract_tokens_per_s": tokens / o, "extract_vs_plain": p / o,
            "plain_hf_peak_gib": p_mem, "extract_peak_gib": o_mem}


def bench_generation(model, hf, prompts, routed, timer: Gpu, batch_size: int, new_tokens: int) -> dict:
    from lowres_safety.generation import generate, prompt_batches

    batches = [(ids, mask) for _, ids, mask in prompt_batches(model, prompts, batch_size, None)]
    pad = model.tokenizer.pad_token_id

    @torch.no_grad()
    def reference():
        for ids, mask in batches:
            hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                        do_sample=False, pad_token_id=pad)

    def ours(hooks):
        return lambda: generate(model, prompts, hooks, max_new_tokens=new_tokens, batch_size=batch_size,
                                stop_at_eos=False, progress=False)

    reference(), ours(routed)()  # warm-up
    (h, h_mem), (p, p_mem), (r, r_mem) = timer.run(reference), timer.run(ours([])), timer.run(ours(routed))
    return {"prompts": len(prompts), "batch_size": batch_size, "new_tokens": new_tokens, "hf_generate_s": h,
            "plain_s": p, "routed_s": r, "ours_vs_hf_generate": {"plain": p / h, "routed": r / h},
            "target_routed_vs_hf": 1.3, "hf_peak_gib": h_mem, "plain_peak_gib": p_mem, "routed_peak_gib": r_mem}


def check_device_map(config: dict, tokenizer, dtype) -> dict:
    """Save a 4-layer model of the same width, load it spread over every GPU, check hooks fire on each block."""
    from lowres_safety import data, extract, hooks, load_model
    from lowres_safety.generation import generate

    n_gpu = torch.cuda.device_count()
    if n_gpu < 2:
        return {"skipped": f"{n_gpu} GPU(s): spreading a model needs two or more"}
    small = dict(config, num_hidden_layers=4)
    with tempfile.TemporaryDirectory() as folder:
        random_model(small, dtype, "cpu").save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        try:
            model = load_model(folder, device_map="auto")
        except TypeError as err:
            return {"load_model_device_map": False, "error": str(err)}
        devices = sorted({str(next(block.parameters()).device) for block in model.blocks})
        fired = set()

        def mark(act, hook):
            fired.add(hook.name)
            return act

        prompts = data.load_builtin(["en", "de"], n_per_class=2)
        watch = [(f"blocks.{l}.hook_resid_post", mark) for l in range(model.cfg.n_layers)]
        acts = extract(model, prompts, "all", ("t_post_inst",), progress=False)
        out = generate(model, prompts, watch + hooks.add(torch.ones(model.cfg.d_model), 1.0, 3, scope="from_last"),
                       max_new_tokens=4, progress=False)
    return {"load_model_device_map": True, "block_devices": devices, "spread": len(devices) > 1,
            "hooks_fired_on_every_block": len(fired) == model.cfg.n_layers,
            "extract_finite": bool(torch.isfinite(acts.acts).all()), "generated": int(out["n_new_tokens"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="4 layers, width 64: checks the script (CPU if no GPU)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=None, help="built-in prompts per class and language")
    parser.add_argument("--skip", nargs="*", default=[], choices=["extraction", "generation", "largest_batch",
                                                                     "device_map"])
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.tiny:
        print(json.dumps({"benchmark": "gpu", "skipped": "CUDA is not available on this machine; run it on a GPU "
                          "machine, or with --tiny to check the script on the CPU"}))
        return
    from lowres_safety import data
    from lowres_safety.models import boot

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = TINY if args.tiny else QWEN25_7B
    dtype = torch.bfloat16
    tokenizer = chat_tokenizer()
    timer = Gpu(device)
    t = time.perf_counter()
    hf = random_model(config, dtype, device)
    model = boot(random_model(config, dtype, device), tokenizer, ARCHITECTURE)
    model.cfg.device = device
    result = {"benchmark": "gpu", "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "config": "tiny" if args.tiny else "Qwen2.5-7B-Instruct (random weights)", "dtype": str(dtype),
              "parameters_b": sum(p.numel() for p in hf.parameters()) / 1e9, "setup_s": time.perf_counter() - t}
    per_class = args.per_class or (2 if args.tiny else 8)
    prompts = data.load_builtin(n_per_class=per_class)
    if "extraction" not in args.skip:
        result["extraction"] = bench_extraction(model, hf, prompts, timer, args.batch_size)
    if "generation" not in args.skip:
        routed = routed_hooks(model, model.cfg.n_layers // 2)
        result["generation"] = bench_generation(model, hf, prompts, routed, timer, args.batch_size, args.new_tokens)
    if "largest_batch" not in args.skip:
        del hf
        if device == "cuda":
            torch.cuda.empty_cache()
        from lowres_safety import extract
        from lowres_safety.generation import generate
        from lowres_safety.models import encode_chat

        routed = routed_hooks(model, model.cfg.n_layers // 2)
        cap = 32 if args.tiny else 1024

        def extract_at(batch):
            p = long_prompts(batch, tokenizer)
            return timer.run(lambda: extract(model, p, "all", ("t_inst", "t_post_inst"), batch_size=batch,
                                             progress=False))

        def generate_at(batch):
            p = long_prompts(batch, tokenizer)
            return timer.run(lambda: generate(model, p, routed, max_new_tokens=args.new_tokens, batch_size=batch,
                                              stop_at_eos=False, progress=False))

        result["largest_batch"] = {"prompt_tokens": len(encode_chat(tokenizer, long_prompts(1, tokenizer).texts[0])),
                                   "extraction": largest_batch(extract_at, 8, cap),
                                   "routed_generation": largest_batch(generate_at, 8, cap)}
    if "device_map" not in args.skip:
        result["device_map"] = (check_device_map(config, tokenizer, dtype) if device == "cuda"
                                else {"skipped": "no GPU"})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
