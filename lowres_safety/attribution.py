"""Direct logit attribution of the refusal decision at the last prompt token.

The quantity explained is the *refusal logit difference* at the first response position:
mean logit of the model's refusal-opening tokens minus mean logit of its usual compliant
openings. The final residual stream is a sum of components (embedding, every layer's
attention and MLP output; attention splits further into heads), so with the final
norm's scale frozen at its value on the real input (``ActivationCache.apply_ln_to_stack``)
each component's contribution is its normalised output dotted with
``W_U[:, refusal].mean(1) - W_U[:, comply].mean(1)``. For RMSNorm models (Llama, Qwen,
SmolLM2) the contributions then sum exactly to the logit difference; for LayerNorm
models too, because the frozen centring is linear. The unembedding bias cancels in
difference of means when both sets are equal-sized and otherwise is reported as its
own ``bias`` row.

Which TransformerLens cache tools work on the TransformerBridge (compatibility mode):
``run_with_cache`` with ``names_filter`` and ``attention_mask``,
``ActivationCache.decompose_resid``, ``stack_head_results``, ``apply_ln_to_stack`` and
``accumulated_resid(apply_ln=True)`` all do (tested: components sum to the logits).
The bridge's ``W_U`` already carries the final norm's gain folded in. Gemma-2 caps its
final logits (``cap·tanh(x/cap)``); ``total`` is then the logit difference before the
cap, which is what the linear components add up to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .data import PromptSet, tier_of
from .directions import unit
from .generation import as_prompt_set, prompt_batches

__all__ = ["Attribution", "attribute", "compare_languages", "direction_tokens", "logit_diff_direction"]


def logit_diff_direction(model, refusal_ids: Sequence[int], compliance_ids: Sequence[int]
                         ) -> tuple[Float[Tensor, " d_model"], float]:
    """Residual direction whose dot product with the normalised final stream is the logit difference, and the bias term."""
    refusal_ids, compliance_ids = list(refusal_ids), list(compliance_ids)
    if not refusal_ids or not compliance_ids:
        raise ValueError("refusal and compliance token sets must both be non-empty")
    if set(refusal_ids) & set(compliance_ids):
        raise ValueError(f"tokens {sorted(set(refusal_ids) & set(compliance_ids))} are in both sets")
    w_u = model.W_U.float()
    direction = w_u[:, refusal_ids].mean(1) - w_u[:, compliance_ids].mean(1)
    b_u = getattr(model, "b_U", None)
    bias = 0.0 if b_u is None else float(b_u[refusal_ids].float().mean() - b_u[compliance_ids].float().mean())
    return direction, bias


@dataclass
class Attribution:
    """Per-prompt tidy tables of one :func:`attribute` run.

    ``components``: prompt × component (``embed``, ``L{l} attn``, ``L{l} mlp``, ``bias``)
    contributions; ``heads``: prompt × (layer, head); ``lens``: prompt × layer, the
    refusal logit difference read from the residual stream before each layer (and after
    the last); ``total``: one row per prompt with the actual logit difference.
    """

    components: pd.DataFrame
    heads: pd.DataFrame
    lens: pd.DataFrame
    total: pd.DataFrame

    def mean(self, table: str = "components", by: Sequence[str] = ("language", "tier", "subset")) -> pd.DataFrame:
        """Mean contribution per group (e.g. per language and subset) of one of the tables."""
        frame = getattr(self, table)
        keys = {"components": ["component", "layer", "kind"], "heads": ["layer", "head"], "lens": ["layer"],
                "total": []}[table]
        value = "logit_diff" if table in ("lens", "total") else "contribution"
        return frame.groupby([*by, *keys], sort=False)[value].mean().reset_index()


def _names(n_layers: int) -> list[str]:
    names = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"]
    for layer in range(n_layers):
        names += [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out",
                  f"blocks.{layer}.attn.hook_z"]
    return names + [f"blocks.{n_layers - 1}.hook_resid_post"]


@torch.no_grad()
def attribute(model, prompts: PromptSet | Sequence[str], refusal_ids: Sequence[int], compliance_ids: Sequence[int], *,
              batch_size: int = 8, system: str | None = None, progress: bool = True) -> Attribution:
    """Decompose the refusal logit difference at the last prompt token of every prompt.

    One cached forward pass per batch (left-padded, so position -1 is every row's last
    prompt token); only the hooks needed are cached.
    """
    prompts = as_prompt_set(prompts)
    direction, bias = logit_diff_direction(model, refusal_ids, compliance_ids)
    n_layers = model.cfg.n_layers
    names = set(_names(n_layers)) & set(model.hook_dict)
    comp_rows, head_rows, lens_rows, totals = [], [], [], np.zeros(len(prompts))
    meta = prompts.frame[["id", "language", "subset", "source_id"]].to_dict(orient="records")
    batches = list(prompt_batches(model, prompts, batch_size, system))
    for idx, ids, mask in tqdm(batches, desc="attribute", disable=not progress):
        logits, cache = model.run_with_cache(ids, attention_mask=mask, names_filter=lambda n: n in names)
        last = _uncapped(model, logits[:, -1].float().cpu())
        totals[idx] = (last[:, list(refusal_ids)].mean(1) - last[:, list(compliance_ids)].mean(1)).numpy()
        d = direction.to(last.device)

        def score(stack: Tensor, cache=cache, d=d) -> np.ndarray:  # [component, batch, d_model] -> [component, batch]
            normed = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
            return (normed.float().cpu() @ d).numpy()

        stack, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
        comps = score(stack)
        heads, head_labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
        head_scores = score(heads)
        lens, lens_labels = cache.accumulated_resid(layer=-1, pos_slice=-1, return_labels=True)
        lens_scores = score(lens) + bias
        for j, i in enumerate(idx):
            base = meta[i]
            for label, value in zip(labels, comps[:, j]):
                layer, kind = _parse(label, n_layers)
                comp_rows.append({**base, "component": _pretty(label), "layer": layer, "kind": kind,
                                  "contribution": float(value)})
            if bias:
                comp_rows.append({**base, "component": "bias", "layer": n_layers, "kind": "bias",
                                  "contribution": bias})
            for label, value in zip(head_labels, head_scores[:, j]):
                layer, head = (int(x) for x in label[1:].split("H"))
                head_rows.append({**base, "layer": layer, "head": head, "contribution": float(value)})
            for k, value in enumerate(lens_scores[:, j]):
                lens_rows.append({**base, "layer": k, "label": lens_labels[k], "logit_diff": float(value)})
        del cache
    total = prompts.frame[["id", "language", "subset", "source_id"]].assign(logit_diff=totals)
    frames = [pd.DataFrame(r) for r in (comp_rows, head_rows, lens_rows)]
    for frame in (*frames, total):
        frame.insert(2, "tier", frame["language"].map(tier_of))
    return Attribution(frames[0], frames[1], frames[2], total)


def _uncapped(model, logits: Float[Tensor, "batch vocab"]) -> Float[Tensor, "batch vocab"]:
    """Logits before a final soft-cap ``cap·tanh(x/cap)`` (Gemma-2), where the components add up.

    Direct attribution is linear in the residual stream; the cap is not. Inverting it
    (``cap·atanh(y/cap)``, exact up to float32 saturation near ±cap) makes ``total`` the
    quantity the components sum to on every architecture.
    """
    cap = getattr(model.cfg, "output_logits_soft_cap", None) or 0.0
    if cap <= 0:
        return logits
    return cap * torch.atanh((logits / cap).double().clamp(-1 + 1e-12, 1 - 1e-12)).float()


def _parse(label: str, n_layers: int) -> tuple[int, str]:
    """'3_attn_out' -> (3, 'attn'); 'embed' -> (-1, 'embed')."""
    if "_" in label and label.split("_")[0].isdigit():
        layer, kind = label.split("_")[:2]
        return int(layer), kind
    return -1, label


def _pretty(label: str) -> str:
    head = label.split("_")
    return f"L{head[0]} {head[1]}" if head[0].isdigit() else label


def compare_languages(attr: Attribution, a: str, b: str, *, subset: str = "harmful", table: str = "components",
                      top: int | None = None) -> pd.DataFrame:
    """Where two languages' contributions diverge, on parallel prompts (same source id) only.

    Rows: component (or head), mean in ``a``, mean in ``b``, ``diff = a - b``, sorted by
    ``|diff|``; ``n_pairs`` is how many source ids both languages share.
    """
    frame = getattr(attr, table)
    keys = ["component", "layer", "kind"] if table == "components" else ["layer", "head"]
    frame = frame[frame["subset"] == subset]
    shared = set(frame[frame["language"] == a]["source_id"]) & set(frame[frame["language"] == b]["source_id"])
    if not shared:
        raise ValueError(f"no parallel {subset} prompts (same source_id) in both {a!r} and {b!r}")
    frame = frame[frame["source_id"].isin(shared)]
    means = frame[frame["language"].isin([a, b])].pivot_table(index=keys, columns="language", values="contribution",
                                                                aggfunc="mean", sort=False)
    out = means.rename(columns={a: f"mean_{a}", b: f"mean_{b}"}).reset_index()
    out.columns.name = None
    out["diff"] = out[f"mean_{a}"] - out[f"mean_{b}"]
    out["n_pairs"] = len(shared)
    out = out.reindex(out["diff"].abs().sort_values(ascending=False).index).reset_index(drop=True)
    return out.head(top) if top else out


def direction_tokens(model, direction: Float[Tensor, " d_model"], k: int = 15) -> pd.DataFrame:
    """Tokens a residual direction promotes (top) and suppresses (bottom) through the unembedding.

    ``W_U`` here includes the final norm's gain (folded by the bridge), so this is the
    logit change per unit of the direction added just before the final norm.
    """
    scores = unit(direction.float().to(model.W_U.device)) @ model.W_U.float()
    rows = []
    for sign, name in ((1, "promoted"), (-1, "suppressed")):
        values, ids = torch.topk(sign * scores, k)
        for rank, (v, i) in enumerate(zip(values.tolist(), ids.tolist())):
            rows.append({"effect": name, "rank": rank + 1, "token_id": i,
                         "token": model.tokenizer.decode([i]), "logit": sign * v})
    return pd.DataFrame(rows)
