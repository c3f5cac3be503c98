"""How long a ``steer`` run will take, said before its first forward pass.

The work is counted from the plan (prompts, their token lengths from the real tokenizer,
new tokens, the passes each method needs) and priced two ways:

- **here**: the model's own generation loop timed on this machine (one batch, a prefill
  and four decoding steps: a few seconds; an estimate from timed matrix products alone
  came out five times too low on the 360M organism, where the per-step costs beyond the
  products dominate);
- **a 7B model on one GPU**: a decoding step reads every weight once (bf16 weights over
  an H100's memory bandwidth at the share a batched ``generate`` reaches) and a prefill is
  compute-bound (its dense bf16 peak at a typical share). The assumptions are in
  :data:`GPU_7B`; the number is for planning, not a measurement.

A count is an upper bound where answers stop early (EOS), and leaves out the causal
check's forward passes (a few per source prompt).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["GPU_7B", "Estimate", "Work", "clock", "price_gpu", "price_here", "steer_work"]

#: Qwen2.5-7B-Instruct on one H100 SXM: parameters, layers, bytes per weight, usable bandwidth and compute.
GPU_7B = {"params": 7.6e9, "n_layers": 28, "bytes_per_param": 2, "bandwidth": 3.35e12 * 0.6, "flops": 989e12 * 0.4,
          "step_overhead_s": 0.02, "batch_size": 16}


@dataclass(frozen=True)
class Work:
    """Forward work of a run: prompt tokens run as prefill, decoding steps and their batch rows."""

    prefill_tokens: int  # tokens run through the whole model in prefill passes (extraction, KL, answers)
    decode_rows: int  # prompt-answers generated (each runs ``new_tokens`` decoding steps)
    new_tokens: int
    batch_size: int
    detail: dict  # what each part counts, for the report

    @property
    def decode_steps(self) -> int:
        return int(np.ceil(self.decode_rows / self.batch_size)) * self.new_tokens


@dataclass(frozen=True)
class Estimate:
    here_s: float
    gpu_7b_s: float
    work: Work

    def describe(self, what: str = "this run") -> str:
        return (f"estimate for {what}: {clock(self.here_s)} here, {clock(self.gpu_7b_s)} for a 7B model on one "
                f"H100 ({self.work.decode_rows} answers of up to {self.work.new_tokens} tokens, "
                f"{self.work.prefill_tokens / 1e6:.2f} M prefill tokens)")


def steer_work(*, n_eval: int, eval_tokens: float, n_fit: int, fit_tokens: float, n_source_fit: int,
               n_languages: int, n_seeds: int, shared_across_seeds: bool, new_tokens: int, batch_size: int,
               mc_items: int = 0, sweep_runs: int = 0) -> Work:
    """The forward work of a steer run.

    ``n_eval`` evaluation prompts per language (both classes), ``n_fit`` fit prompts in
    all (source and targets), ``n_source_fit`` of them in the source languages (CAST
    pools them twice), mean prompt lengths in tokens. Per language: no intervention,
    ablation, addition, the gate's ablation arm and AdaSteer and CAST at k = 0 (once, when
    the fit does not change with the seed), AdaSteer and CAST at k = 32 (per seed).
    ``sweep_runs``: generations of every harmful prompt the ``--sweeps`` add (once, not per seed).
    """
    shared, per_seed = 6, 2
    arms = n_languages * (shared * (1 if shared_across_seeds else n_seeds) + per_seed * n_seeds)
    swept = sweep_runs * n_languages * (n_eval // 2)
    answers = arms * n_eval + swept
    kl = arms * n_eval // 2 + n_languages * n_eval // 2  # harmless first-token passes, plus the unhooked reference
    fits = n_seeds if not shared_across_seeds else 1
    prefill = (answers + kl) * eval_tokens + fits * (n_fit + 2 * n_source_fit) * fit_tokens
    prefill += n_languages * n_eval * eval_tokens + arms * mc_items * eval_tokens
    detail = {"arms": arms, "answers": answers, "kl_passes": kl, "fit_passes": fits * (n_fit + 2 * n_source_fit),
              **({"sweep_answers": swept} if swept else {})}
    return Work(int(prefill), int(answers), int(new_tokens), int(batch_size), detail)


def price_here(model, work: Work, prompt_words: int = 48) -> float:
    """Seconds on this machine, from the model's own generation timed here.

    One batch of ``work.batch_size`` prompts of about ``prompt_words`` words is generated
    for 1 and for 5 new tokens, with a no-op hook on every block's output (the steering
    methods hook most layers, and each hook is a Python call per step); the difference gives
    a decoding step, the first a prefill token (a few seconds). Answers that run long and
    the KL and utility passes add to it, so it is a floor.
    """
    from ..generation import generate  # the run's own loop: the bridge, its hooks machinery, the KV cache

    texts = [" ".join(["word"] * prompt_words)] * work.batch_size
    hooks = [(f"blocks.{layer}.hook_resid_post", lambda act, hook: act) for layer in range(model.cfg.n_layers)]

    def seconds(new_tokens: int) -> float:
        return _timed(lambda: generate(model, texts, hooks, max_new_tokens=new_tokens, batch_size=work.batch_size,
                                       stop_at_eos=False, progress=False), 1)

    prefill = seconds(1)
    step = max(seconds(5) - prefill, 0.0) / 4
    per_token = prefill / (work.batch_size * (prompt_words + 20))  # the chat template adds about 20 tokens
    return float(work.decode_steps * step + work.prefill_tokens * per_token)


def price_gpu(work: Work, gpu: dict = GPU_7B) -> float:
    """Seconds for a 7B model on one GPU, from :data:`GPU_7B`'s assumptions."""
    weights = gpu["params"] * gpu["bytes_per_param"]
    batches = np.ceil(work.decode_rows / gpu["batch_size"])
    decode = batches * work.new_tokens * (weights / gpu["bandwidth"] + gpu["step_overhead_s"])
    prefill = 2 * gpu["params"] * work.prefill_tokens / gpu["flops"]
    return float(decode + prefill)


def _timed(fn, repeats: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def clock(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
