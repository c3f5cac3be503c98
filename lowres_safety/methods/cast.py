"""CAST, conditional activation steering (Lee et al. 2025), as the paper's released code runs it.

Source: github rashadaziz/low-resource-safety, ``src/multilingual_latent_safety/cast.py``
(``cast_pca_direction``, ``cast_condition_similarity``, ``select_condition_point``,
``CastState``, ``make_cast_hook``) and ``scripts/routing_refusal/run_cast_steering.py``
with ``configs/routing_refusal/run_cast_steering.yaml``.

- **Condition vector** per condition layer (1–13): the first principal component of
  pairwise differences (each harmful/harmless pair centred on its own midpoint, power
  iteration from the mean difference, sign so that harmful projects higher), of
  prompt states mean-pooled over the prompt's tokens, the prompt chat-formatted
  *without* the generation prompt.
- **Condition check** at the prefill, at one layer: ``sim = cos(h, tanh(proj_c h))`` with
  ``proj_c h = (h·c / c·c) c``; comparator ``"larger"`` fires when ``sim < τ``,
  ``"smaller"`` when ``sim > τ``.
- **Grid search** over condition layer × τ ∈ {0, 0.0001, …, 0.06} × comparator for the
  best binary F1 of the harmful class; only a strictly better F1 replaces the best, so
  the lowest layer, then τ, then ``"larger"`` wins ties.
- **Behaviour vector** per behaviour layer (15–23): the same pairwise principal component
  of the last prompt token's states, added as 1.5·unit vector at every position of
  rows where the condition fired, prefill and decoding steps alike.
- Variants: k = 0 fits the vectors and the grid on the source languages' prompts
  (the released zero-shot variant uses CAST's own English condition data and an
  Alpaca refusal/compliance behaviour set, which are not available offline); k = 32
  ("adapted") fits both vectors on 32 + 32 target-language examples and tunes the grid
  on the same target pool (the released code tunes on the target's whole val split).

At inference the released hook averages the prompt's states *including left padding*
(``residual.mean(dim=1)``), unlike the masked means it trained and tuned on; that is the
default here too (``masked=False``), so a prompt's decision can depend on its batch-mates'
lengths. ``masked=True`` averages over the prompt's own tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .. import hooks as H
from .._runtime.batching import StopForward, left_pad, length_batches
from ..activations import ActivationSet
from ..data import PromptSet
from ..models import encode_chat
from .base import Context, Target, per_class_sample

__all__ = ["ADAPTED_K", "CONDITION_LAYERS", "BEHAVIOUR_LAYERS", "Cast", "CastRule", "cast_hooks",
           "condition_similarity", "mean_pooled_states", "pairwise_pc", "select_condition"]

ADAPTED_K = 32
CONDITION_LAYERS = tuple(range(1, 14))  # run_cast_steering.yaml, the same indices for every model
BEHAVIOUR_LAYERS = tuple(range(15, 24))
THRESHOLDS = np.round(np.arange(0.0, 0.06 + 0.0001 / 2, 0.0001), 6)
COMPARATORS = ("larger", "smaller")  # "larger": fires when sim < τ; "smaller": when sim > τ
STRENGTH = 1.5


def pairwise_pc(pos: Float[Tensor, "n d"], neg: Float[Tensor, "m d"], steps: int = 80) -> Float[Tensor, " d"]:
    """Unit first principal component of pair-centred differences (``cast_pca_direction``, ``pca_pairwise``)."""
    n = min(len(pos), len(neg))
    if n == 0:
        raise ValueError("CAST's direction needs at least one harmful and one harmless example")
    pos, neg = pos[:n].double(), neg[:n].double()
    mid = (pos + neg) / 2
    rows = torch.stack([pos - mid, neg - mid], 1).reshape(2 * n, -1)  # interleaved
    v = pos.mean(0) - neg.mean(0)
    for _ in range(steps):
        v = rows.T @ (rows @ v)
        v = v / v.norm().clamp_min(1e-12)
    if ((pos @ v) < (neg @ v)).sum() > ((pos @ v) > (neg @ v)).sum():
        v = -v
    return v.float()


def condition_similarity(h: Float[Tensor, "batch d"], c: Float[Tensor, " d"]) -> Float[Tensor, " batch"]:
    """cos(h, tanh(proj_c h)), proj_c h = (h·c / c·c) c (``cast_condition_similarity``)."""
    c = c.to(h.device, h.dtype)
    proj = (h @ c / c.dot(c))[:, None] * c
    return torch.nn.functional.cosine_similarity(h, torch.tanh(proj), dim=-1)


def _fires(sim: np.ndarray, tau: float, comparator: str) -> np.ndarray:
    return sim < tau if comparator == "larger" else sim > tau


@dataclass(frozen=True)
class CastRule:
    layer: int
    threshold: float
    comparator: str
    f1: float


def select_condition(sims: dict[int, np.ndarray], y: np.ndarray, thresholds=THRESHOLDS) -> CastRule:
    """Grid search for the best binary F1 of the harmful class; the first strict optimum wins.

    Order as the released loop: layer, then τ, then comparator ("larger" before "smaller");
    vectorised, so ``argmax`` (first maximum in that order) is the loop's strict-improvement rule.
    """
    y = np.asarray(y).astype(bool)
    layers = sorted(sims)
    taus = np.asarray(thresholds, dtype=float)
    s = np.stack([np.asarray(sims[layer], dtype=float) for layer in layers])[:, None, None, :]  # [L, 1, 1, n]
    fires = np.concatenate([s < taus[None, :, None, None], s > taus[None, :, None, None]], axis=2)  # [L, T, 2, n]
    tp = (fires & y).sum(-1)
    fp = (fires & ~y).sum(-1)
    fn = (~fires & y).sum(-1)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    li, ti, ci = np.unravel_index(int(np.argmax(f1)), f1.shape)
    return CastRule(layers[li], float(taus[ti]), COMPARATORS[ci], float(f1[li, ti, ci]))


@torch.no_grad()
def mean_pooled_states(model, prompts: PromptSet, layers: Sequence[int], *, batch_size: int = 16
                       ) -> dict[int, Float[Tensor, "prompt d_model"]]:
    """Masked mean over each prompt's tokens of ``blocks.{l}.hook_resid_post``, no generation prompt."""
    tok = model.tokenizer
    encoded = [encode_chat(tok, text, generation_prompt=False).ids for text in prompts.texts]
    out = {layer: torch.empty(len(encoded), model.cfg.d_model) for layer in layers}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for idx in length_batches([len(e) for e in encoded], batch_size):
        ids, mask = left_pad([encoded[i] for i in idx], pad)
        seen = {}

        def grab(act, hook, layer, seen=seen):
            seen[layer] = act
            if layer == max(layers):
                raise StopForward  # nothing deeper is needed
            return act

        try:
            with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", partial(grab, layer=layer))
                                        for layer in layers]):
                model(ids.to(model.cfg.device), attention_mask=mask.to(model.cfg.device))
        except StopForward:
            pass
        m = mask.to(torch.float32)[:, :, None]
        for layer in layers:
            out[layer][torch.from_numpy(idx)] = ((seen[layer].float().cpu() * m).sum(1) / m.sum(1))
    return out


def cast_hooks(condition: Float[Tensor, " d"], rule: CastRule, behaviour: dict[int, Tensor], *,
               strength: float = STRENGTH, masked: bool = False) -> list[H.Hook]:
    """Check the condition at the prefill; add strength·b̂[l] at every position of the rows it fires on."""
    if min(behaviour) <= rule.layer:
        raise ValueError(f"the condition layer {rule.layer} must come before the behaviour layers {sorted(behaviour)}")
    state: dict[str, Tensor] = {}

    def check(act: Float[Tensor, "batch pos d_model"], hook):
        if not H.is_decoding():
            H.check_decoding_loop("CAST's hooks")
            mask = H.prompt_mask() if masked else None
            if mask is None:
                pooled = act.float().mean(1)
            else:
                m = mask.to(act.device, torch.float32)[:, :, None]
                pooled = (act.float() * m).sum(1) / m.sum(1)
            sim = condition_similarity(pooled, condition).cpu().numpy()
            state["fire"] = torch.from_numpy(_fires(sim, rule.threshold, rule.comparator))
        return act

    def steer(layer: int):
        unit = behaviour[layer] / behaviour[layer].norm()

        def fn(act: Float[Tensor, "batch pos d_model"], hook):
            fire = state.get("fire")
            if fire is None or fire.shape[0] != act.shape[0]:
                raise RuntimeError("CAST's behaviour hook ran without a matching condition check")
            if not bool(fire.any()):
                return act
            out = act.clone()
            out[fire.to(act.device)] += strength * unit.to(act.device, act.dtype)
            return out
        return fn

    return ([(f"blocks.{rule.layer}.hook_resid_post", check)]
            + [(f"blocks.{layer}.hook_resid_post", steer(layer)) for layer in sorted(behaviour)])


def _layers(wanted: Sequence[int], n_layers: int, what: str) -> tuple[int, ...]:
    kept = tuple(layer for layer in wanted if layer < n_layers)
    if not kept:
        raise ValueError(f"none of CAST's {what} layers {list(wanted)} exist in a {n_layers}-layer model; "
                         "pass condition_layers= and behaviour_layers=")
    return kept


@dataclass(frozen=True)
class Cast:
    """CAST with the released code's condition, grid search and behaviour vector."""

    name = "cast"
    model: object
    condition_layers: tuple[int, ...]
    behaviour_layers: tuple[int, ...]
    zero_shot: tuple  # (condition vector, rule, behaviour vectors) fitted on the source prompts
    seed: int = 0
    masked: bool = False
    _adapted: dict = field(default_factory=dict, repr=False, compare=False)  # language, k -> fitted

    @classmethod
    def fit(cls, ctx: Context, condition_layers=CONDITION_LAYERS, behaviour_layers=BEHAVIOUR_LAYERS,
            masked: bool = False) -> Cast:
        cond = _layers(condition_layers, ctx.n_layers, "condition")
        behave = _layers(behaviour_layers, ctx.n_layers, "behaviour")
        return cls(ctx.model, cond, behave, cls._vectors(ctx.model, ctx.acts, cond, behave), ctx.seed, masked)

    @staticmethod
    def _vectors(model, acts: ActivationSet, cond, behave) -> tuple:
        y = acts.prompts.labels.astype(bool)
        pooled = mean_pooled_states(model, acts.prompts, cond)
        conditions = {layer: pairwise_pc(x[y], x[~y]) for layer, x in pooled.items()}
        sims = {layer: condition_similarity(pooled[layer], conditions[layer]).numpy() for layer in cond}
        rule = select_condition(sims, y.astype(int))
        last = acts.acts[:, :, acts.position_index("t_post_inst")].float()
        behaviour = {layer: pairwise_pc(last[y, acts.layer_index(layer)], last[~y, acts.layer_index(layer)])
                     for layer in behave}
        return conditions[rule.layer], rule, behaviour

    def variants(self, ks) -> tuple[int, ...]:
        return (0, ADAPTED_K)

    def fitted_for(self, target: Target, k: int) -> tuple:
        if k == 0:
            return self.zero_shot
        if (target.language, k) not in self._adapted:
            shots = per_class_sample(target.pool, k, self.seed)
            self._adapted[target.language, k] = self._vectors(self.model, shots, self.condition_layers,
                                                              self.behaviour_layers)
        return self._adapted[target.language, k]

    def hooks(self, target: Target, k: int) -> list[H.Hook]:
        condition, rule, behaviour = self.fitted_for(target, k)
        return cast_hooks(condition, rule, behaviour, masked=self.masked)

    def extras(self, target: Target, k: int) -> dict:
        _, rule, _ = self.fitted_for(target, k)
        return {"cast_layer": rule.layer, "cast_threshold": rule.threshold, "cast_comparator": rule.comparator}
