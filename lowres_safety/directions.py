"""Harmfulness directions: differences of means per language, pooled, and their geometry.

The harmfulness direction of a set of prompts is mean(harmful) - mean(harmless) of the
residual stream at each layer and position (Arditi et al. 2024). The paper's question is
whether the direction found in high-resource languages also separates prompts in
low-resource ones; PolyRefuse's is whether per-language directions are parallel.
All means are taken in float32.
"""

from __future__ import annotations

import einops
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from .activations import ActivationSet
from .data import tier_of

__all__ = ["cosine_matrix", "diff_of_means", "first_pc", "pc1_of_directions", "per_language", "pooled", "unit"]


def unit(v: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """Unit-norm copy along the last axis."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def diff_of_means(acts: ActivationSet) -> Float[Tensor, "layer position d_model"]:
    """mean(harmful) - mean(harmless) of one activation set, in float32."""
    labels = acts.labels.bool()
    if labels.all() or not labels.any():
        raise ValueError(
            f"a difference of means needs harmful and harmless prompts; this set has "
            f"{int(labels.sum())} harmful and {int((~labels).sum())} harmless ({acts.prompts.languages})"
        )
    x = acts.acts.float()
    return x[labels].mean(0) - x[~labels].mean(0)


def per_language(acts: ActivationSet, languages=None) -> dict[str, Float[Tensor, "layer position d_model"]]:
    """Raw difference-of-means direction of each language (unnormalised; use :func:`unit`)."""
    languages = languages or acts.prompts.languages
    return {lang: diff_of_means(_require_language(acts, lang)) for lang in languages}


def pooled(acts: ActivationSet, languages=None) -> Float[Tensor, "layer position d_model"]:
    """Difference of means over the pooled prompts of ``languages`` (e.g. ``data.tier("high")``).

    Languages named but absent from ``acts`` are skipped, so ``tier("high")`` works on a
    set with only some high-resource languages; none present is an error.
    """
    if languages is None:
        return diff_of_means(acts)
    present = [lang for lang in languages if lang in acts.prompts.languages]
    if not present:
        raise ValueError(f"none of {list(languages)} is in this activation set ({acts.prompts.languages})")
    return diff_of_means(acts.where(language=present))


def first_pc(directions: dict[str, Tensor]) -> Float[Tensor, "layer position d_model"]:
    """First principal component of the per-language unit directions (uncentred, sign-aligned to their mean).

    Uncentred on purpose: the shared component of nearly parallel directions is their
    common axis, which centring would remove.
    """
    stacked = unit(torch.stack(list(directions.values())))  # [lang, layer, pos, d]
    flat = einops.rearrange(stacked, "lang layer pos d -> (layer pos) lang d")
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    pc = vh[:, 0]  # [(layer pos), d]
    sign = torch.sign((pc * flat.mean(1)).sum(-1, keepdim=True))
    pc = pc * torch.where(sign == 0, torch.ones_like(sign), sign)
    return einops.rearrange(pc, "(layer pos) d -> layer pos d", layer=stacked.shape[1])


def cosine_matrix(directions: dict[str, Tensor], layers, positions) -> pd.DataFrame:
    """Tidy cosine similarities between per-language directions at every layer and position."""
    names = list(directions)
    u = unit(torch.stack([directions[n] for n in names]))
    cos = einops.einsum(u, u, "a layer pos d, b layer pos d -> layer pos a b")
    rows = [
        {"layer": layer, "position": pos, "language_a": a, "language_b": b, "tier_a": tier_of(a),
         "tier_b": tier_of(b), "cosine": float(cos[li, pi, ai, bi])}
        for li, layer in enumerate(layers)
        for pi, pos in enumerate(positions)
        for ai, a in enumerate(names)
        for bi, b in enumerate(names)
    ]
    return pd.DataFrame(rows)


def _require_language(acts: ActivationSet, language: str) -> ActivationSet:
    if language not in acts.prompts.languages:
        raise ValueError(f"language {language!r} is not in this activation set; it has {acts.prompts.languages}")
    return acts.where(language=language)


def pc1_of_directions(acts: ActivationSet, languages, layer: int, position: str = "t_post_inst"
                      ) -> Float[Tensor, " d_model"]:
    """Unit first right singular vector of the stacked unit per-language directions, aligned to the first's.

    The released "pc1_of_diffs" pooled direction (``scripts/hrl_direction/compute_hrl_pooled_direction.py``,
    uncentred SVD, sign set by the first language): what the paper's strength sweep, few-shot
    recoverability and ``hrl_pooled`` ablation read, where its steering uses :func:`pooled`.
    """
    li, pi = acts.layer_index(layer), acts.position_index(position)
    per = per_language(acts, list(languages))
    top, first = first_pc(per)[li, pi], per[list(languages)[0]][li, pi]
    return unit(top if float(top @ first) >= 0 else -top)
