"""Benchmark of ``dose_response.dose_response``'s grid against the plain path; prints one JSON object.

The plain path is what ``dose_response`` did before the grid module: one whole bridge
forward per grid point (all layers, logits at every position, every hook point live),
as ``plain_logprobs`` below. The grid (``grid.next_token_grid``) runs once per batch
what the points share and per point only what changes. For ``scope="from_last"`` and
``scope="all"`` at a middle layer it prints:

- ``per_point_speedup``: plain seconds per grid point over the grid's *marginal* seconds
  per point (its time for G points minus its time for the unhooked point alone, over G);
  targets: >= 10 for ``from_last``, >= 1.5 for ``all``;
- ``call_speedup``: a whole ``dose_response`` call (G points plus the unhooked base, as
  both paths need it) plain over grid;
- ``max_abs_diff``: the largest difference between the two paths' refusal log-odds and
  KL over every prompt and point (must be <= 1e-4).

Each figure is the minimum over ``--repeats`` alternating runs of plain and grid, so
machine noise falls on both.

    python bench/dose_response.py           # built-in demo, 8 per class in 8 languages, 2 layers x 4 alphas
    python bench/dose_response.py --quick   # 2 per class in 4 languages, 1 layer x 4 alphas
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from lowres_safety import data, load_model  # noqa: E402
from lowres_safety import evaluation as E  # noqa: E402
from lowres_safety import hooks as H  # noqa: E402
from lowres_safety.generation import prompt_batches  # noqa: E402
from lowres_safety.grid import next_token_grid, token_summary  # noqa: E402


@torch.no_grad()
def plain_logprobs(model, prompts, hooks, batch_size: int) -> torch.Tensor:
    """The old ``next_token_logprobs``: a whole bridge forward, logits at every position."""
    out = None
    with model.hooks(fwd_hooks=list(hooks)):
        for idx, ids, mask in prompt_batches(model, prompts, batch_size, None):
            with H.prompt_attention(mask):
                logits = model(ids, attention_mask=mask)[:, -1].float()
            out = torch.empty(len(prompts), logits.shape[-1]) if out is None else out
            out[torch.from_numpy(idx)] = torch.log_softmax(logits, -1).cpu()
    return out


def measure(model, prompts, points, scope: str, reduce, batch_size: int, repeats: int) -> dict:
    last_only = scope != "all"
    plain_t, grid_t, shared_t = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        base = plain_logprobs(model, prompts, [], batch_size)
        plain = torch.stack([reduce(plain_logprobs(model, prompts, p, batch_size), base) for p in points])
        plain_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        next_token_grid(model, prompts, [[]], last_only=last_only, reduce=reduce, batch_size=batch_size)
        shared_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        grid = next_token_grid(model, prompts, [[]] + points, last_only=last_only, reduce=reduce,
                               batch_size=batch_size)
        grid_t.append(time.perf_counter() - t)
    g = len(points)
    plain_point = min(plain_t) / (g + 1)
    grid_point = max(min(grid_t) - min(shared_t), 1e-9) / g
    return {"points": g, "plain_s": min(plain_t), "grid_s": min(grid_t), "grid_shared_s": min(shared_t),
            "plain_s_per_point": plain_point, "grid_marginal_s_per_point": grid_point,
            "per_point_speedup": plain_point / grid_point, "call_speedup": min(plain_t) / min(grid_t),
            "max_abs_diff": float((grid[1:] - plain).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    model = load_model()
    n = model.cfg.n_layers
    if args.quick:
        prompts = data.load_builtin(["en", "de", "sw", "yo"], n_per_class=2, seed=0)
        layers = [n // 2]
    else:
        prompts = data.load_builtin(None, n_per_class=8, seed=0)
        layers = [n // 3, n // 2]
    repeats = args.repeats or (1 if args.quick else 2)
    torch.manual_seed(0)
    v = torch.randn(model.cfg.d_model)
    alphas = (2.0, 4.0, 8.0, 16.0)
    reduce, _ = token_summary(E.first_token_ids(model.tokenizer, E.DEFAULT_OPENINGS))
    plain_logprobs(model, prompts.where(language="en"), [], args.batch_size)  # warm-up
    result = {"prompts": len(prompts), "languages": prompts.languages, "layers": layers, "alphas": list(alphas),
              "batch_size": args.batch_size, "repeats": repeats, "threads": torch.get_num_threads()}
    for scope in ("from_last", "all"):
        points = [H.add(v, a, [layer], scope=scope) for layer in layers for a in alphas]
        result[f"scope_{scope}"] = measure(model, prompts, points, scope, reduce, args.batch_size, repeats)
    result["target_per_point_speedup"] = {"from_last": 10.0, "all": 1.5}
    result["target_max_abs_diff"] = 1e-4
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
