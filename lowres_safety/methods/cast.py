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
- **Behaviour vector** is read at the end of the user turn (the last token of the prompt
  formatted without the generation prompt, ``adapted_behavior_pool: last``);
  ``behaviour_at="t_post_inst"`` (this toolkit's earlier default) reads it at the last
  token with the generation prompt.
- Variants: k = 0 fits the vectors and the grid on the source languages' prompts, or,
  given CAST's own data (IBM/activation-steering ``docs/demo-data``, ``steer --cast-data``),
  as the released zero-shot run does (:func:`official_zero_shot`); k = 32
  ("adapted", ``run_cast_steering.py::polyrefuse_budget_pairs`` with
  ``training_source=polyrefuse``) fits both vectors on 32 + 32 train prompts of **each
  low-resource language, pooled** (:attr:`Context.adaptation`), and tunes the grid **per
  target on that target's val split** (:attr:`Target.tune`; in-sample on the pooled
  examples where no val prompts are given). ``adapted_from="target"`` fits on each
  target's own pool instead (the earlier default).

At inference the released hook averages the prompt's states *including left padding*
(``residual.mean(dim=1)``), unlike the masked means it trained and tuned on; that is the
default here too (``masked=False``), so a prompt's decision can depend on its batch-mates'
lengths. ``masked=True`` averages over the prompt's own tokens only.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .. import hooks as H
from .._runtime.batching import StopForward, left_pad, length_batches
from ..activations import ActivationSet
from ..data import PromptSet
from ..models import encode_chat, format_chat
from .base import Arms, Context, Target, adapted_from, check_adapted_from, digest, one_arm, per_language_sample
from .upstream import cast_demo_data

__all__ = ["ADAPTED_K", "BEHAVIOUR_AT", "CONDITION_LAYERS", "BEHAVIOUR_LAYERS", "Cast", "CastRule", "cast_hooks",
           "condition_similarity", "directions", "mean_pooled_states", "official_zero_shot", "pairwise_pc",
           "prompt_states", "select_condition", "tail_states", "tune"]

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


# per model (held weakly), the last few pooled-state sets by pooling, layers and texts
_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def prompt_states(model, prompts: PromptSet, layers: Sequence[int], *, pool: str = "mean", batch_size: int = 16
                  ) -> dict[int, Float[Tensor, "prompt d_model"]]:
    """``blocks.{l}.hook_resid_post`` of each prompt formatted without the generation prompt, pooled.

    ``pool="mean"``: masked mean over the prompt's tokens (the condition states);
    ``"last"``: the last token, the end of the user turn (the adapted behaviour states).
    """
    if pool not in ("mean", "last"):
        raise ValueError(f"pool must be 'mean' or 'last', got {pool!r}")
    seen = _STATES.setdefault(model, {})
    key = (pool, tuple(layers), digest(tuple(prompts.texts)))
    if key not in seen:  # a second seed fitted on the same prompts reads them here
        encoded = [encode_chat(model.tokenizer, text, generation_prompt=False).ids for text in prompts.texts]
        widths = [len(e) if pool == "mean" else 1 for e in encoded]
        seen[key] = tail_states(model, encoded, widths, layers, batch_size=batch_size, desc=f"CAST {pool}-pooled states")
        while len(seen) > 4:
            seen.pop(next(iter(seen)))
    return seen[key]


def tail_states(model, encoded: Sequence[Sequence[int]], widths: Sequence[int], layers: Sequence[int], *,
                batch_size: int = 16, desc: str = "CAST states") -> dict[int, Float[Tensor, "seq d_model"]]:
    """Mean of ``blocks.{l}.hook_resid_post`` over each sequence's last ``widths[i]`` tokens.

    Left-padded, so a width of the whole length is the masked mean, 1 the last token, and a
    suffix's token count the suffix (``run_cast_steering.py::extract_pooled_hiddens``, pools
    ``mean``, ``last`` and ``suffix``; a width is clipped to 1..length as there).
    """
    tok = model.tokenizer
    out = {layer: torch.empty(len(encoded), model.cfg.d_model) for layer in layers}
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batches = list(length_batches([len(e) for e in encoded], batch_size))
    for idx in tqdm(batches, desc=desc, unit="batch", disable=len(batches) < 8):
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
        width = torch.tensor([max(1, min(int(widths[i]), len(encoded[i]))) for i in idx])
        m = (torch.arange(ids.shape[1])[None, :] >= ids.shape[1] - width[:, None]).float()[:, :, None]
        for layer in layers:
            out[layer][torch.from_numpy(idx)] = (seen[layer].float().cpu() * m).sum(1) / m.sum(1)
    return out


def mean_pooled_states(model, prompts: PromptSet, layers: Sequence[int], *, batch_size: int = 16
                       ) -> dict[int, Float[Tensor, "prompt d_model"]]:
    """Masked mean over each prompt's tokens of ``blocks.{l}.hook_resid_post``, no generation prompt."""
    return prompt_states(model, prompts, layers, pool="mean", batch_size=batch_size)


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


#: Where the behaviour vector is read: the end of the user turn (released adapted) or the last prompt token.
BEHAVIOUR_AT = ("user_turn_end", "t_post_inst")


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
    adaptation: ActivationSet | None = None  # the pooled low-resource examples; None: each target's pool
    behaviour_at: str = "user_turn_end"
    official_data: bool = False  # k = 0 fitted on CAST's own data (``steer --cast-data``)
    _directions: dict = field(default_factory=dict, repr=False, compare=False)  # pool, k -> (shots, conditions, behaviour)
    _adapted: dict = field(default_factory=dict, repr=False, compare=False)  # language, k -> fitted

    @classmethod
    def fit(cls, ctx: Context, condition_layers=CONDITION_LAYERS, behaviour_layers=BEHAVIOUR_LAYERS,
            masked: bool = False, adapted_from: str = "pooled", behaviour_at: str = "user_turn_end") -> Cast:
        check_adapted_from(adapted_from)
        if behaviour_at not in BEHAVIOUR_AT:
            raise ValueError(f"behaviour_at must be one of {BEHAVIOUR_AT}, got {behaviour_at!r}")
        cond = _layers(condition_layers, ctx.n_layers, "condition")
        behave = _layers(behaviour_layers, ctx.n_layers, "behaviour")
        folder = ctx.upstream.get("cast")
        if folder is not None:  # CAST's own data, as the released zero-shot run
            zero_shot = official_zero_shot(ctx.model, folder, cond, behave)
        else:
            pooled = mean_pooled_states(ctx.model, ctx.acts.prompts, cond)  # fit and tune on the same source prompts
            conditions, behaviour = directions(ctx.model, ctx.acts, cond, behave, behaviour_at, pooled)
            rule = tune(ctx.model, conditions, ctx.acts.prompts, pooled)
            zero_shot = (conditions[rule.layer], rule, behaviour)
        pool = ctx.adaptation if adapted_from == "pooled" else None
        return cls(ctx.model, cond, behave, zero_shot, ctx.seed, masked, pool, behaviour_at, folder is not None)

    def variants(self, ks) -> tuple[int, ...]:
        return (0, ADAPTED_K)

    def fitted_for(self, target: Target, k: int) -> tuple:
        """(condition vector, rule, behaviour vectors) for ``target`` at ``k`` (k = 0: the zero-shot fit)."""
        if k == 0:
            return self.zero_shot
        if (target.language, k) not in self._adapted:
            key = "pooled" if self.adaptation is not None else target.language
            pool = self.adaptation if self.adaptation is not None else target.pool
            if (key, k) not in self._directions:
                shots = per_language_sample(pool, k, self.seed)
                self._directions[key, k] = (shots, *directions(self.model, shots, self.condition_layers,
                                                               self.behaviour_layers, self.behaviour_at))
            shots, conditions, behaviour = self._directions[key, k]
            rule = tune(self.model, conditions, target.tune if target.tune is not None else shots.prompts)
            self._adapted[target.language, k] = (conditions[rule.layer], rule, behaviour)
        return self._adapted[target.language, k]

    def hooks(self, target: Target, k: int) -> list[H.Hook]:
        condition, rule, behaviour = self.fitted_for(target, k)
        return cast_hooks(condition, rule, behaviour, masked=self.masked)

    def arms(self, target: Target, k: int) -> Arms:
        """One arm keyed by the fitted vectors and rule: a seed that fits the same ones (k = 0) shares its answers."""
        condition, rule, behaviour = self.fitted_for(target, k)
        key = f"cast:{digest(condition, rule, self.masked, *(behaviour[layer] for layer in sorted(behaviour)))}"
        return one_arm(target, key, self.hooks(target, k))

    def extras(self, target: Target, k: int) -> dict:
        _, rule, _ = self.fitted_for(target, k)
        official = k == 0 and self.official_data
        tuned = ("CAST data test split" if official else
                 "fit prompts" if k == 0 or target.tune is None else "target val")
        origin = "CAST's own data" if official else adapted_from(k, self.adaptation)
        return {"cast_layer": rule.layer, "cast_threshold": rule.threshold, "cast_comparator": rule.comparator,
                "cast_tuned_on": tuned, "adapted_from": origin}


def directions(model, fit: ActivationSet, cond, behave, behaviour_at: str = "user_turn_end",
               pooled: dict | None = None) -> tuple[dict, dict]:
    """Condition vectors (mean-pooled states) per condition layer and behaviour vectors per behaviour layer."""
    y = fit.prompts.labels.astype(bool)
    pooled = pooled or mean_pooled_states(model, fit.prompts, cond)
    conditions = {layer: pairwise_pc(x[y], x[~y]) for layer, x in pooled.items()}
    if behaviour_at == "user_turn_end":
        last = prompt_states(model, fit.prompts, behave, pool="last")
        behaviour = {layer: pairwise_pc(last[layer][y], last[layer][~y]) for layer in behave}
    else:
        at = fit.acts[:, :, fit.position_index("t_post_inst")].float()
        behaviour = {layer: pairwise_pc(at[y, fit.layer_index(layer)], at[~y, fit.layer_index(layer)])
                     for layer in behave}
    return conditions, behaviour


def tune(model, conditions: dict[int, Tensor], prompts: PromptSet, pooled: dict | None = None) -> CastRule:
    """The condition grid search on ``prompts`` (``tune_condition_point``): their mean-pooled similarities."""
    pooled = pooled or mean_pooled_states(model, prompts, list(conditions))
    sims = {layer: condition_similarity(pooled[layer], c).numpy() for layer, c in conditions.items()}
    return select_condition(sims, prompts.labels.astype(int))


def _mean_pooled(model, texts: Sequence[str], layers: Sequence[int]) -> dict[int, Tensor]:
    encoded = [tuple(encode_chat(model.tokenizer, text, generation_prompt=False).ids) for text in texts]
    return tail_states(model, encoded, [len(e) for e in encoded], layers, desc="CAST data: condition states")


def _suffix_pooled(model, questions: Sequence[str], suffixes: Sequence[str], layers: Sequence[int]
                   ) -> dict[int, Tensor]:
    """Every question followed by every suffix (suffix-major, as released), averaged over the suffix's tokens."""
    tok = model.tokenizer
    heads = [format_chat(tok, q, generation_prompt=False) for q in questions]
    encoded, widths = [], []
    for suffix in suffixes:
        width = len(tok.encode(suffix, add_special_tokens=False))
        for head in heads:
            encoded.append(tuple(tok(head + suffix, add_special_tokens=False)["input_ids"]))
            widths.append(width)
    return tail_states(model, encoded, widths, layers, desc="CAST data: behaviour states")


def official_zero_shot(model, folder: str | Path, condition_layers: Sequence[int], behaviour_layers: Sequence[int],
                       *, questions: int = 100, suffixes: int = 100, thresholds=THRESHOLDS
                       ) -> tuple[Tensor, CastRule, dict[int, Tensor]]:
    """(condition vector at the tuned layer, the tuned rule, behaviour vectors) from CAST's demo-data folder.

    ``thresholds``: the grid of τ (the released 0–0.06 by default; a model whose similarities
    sit elsewhere may need another).
    """
    data = cast_demo_data(folder, questions, suffixes)
    harmful, harmless = zip(*data["condition_train"], strict=True)
    states = _mean_pooled(model, list(harmful) + list(harmless), condition_layers)
    n = len(harmful)
    conditions = {layer: pairwise_pc(x[:n], x[n:]) for layer, x in states.items()}
    test_harmful, test_harmless = zip(*data["condition_test"], strict=True)
    tune = _mean_pooled(model, list(test_harmful) + list(test_harmless), condition_layers)
    y = np.r_[np.ones(len(test_harmful), int), np.zeros(len(test_harmless), int)]
    sims = {layer: condition_similarity(tune[layer], c).numpy() for layer, c in conditions.items()}
    rule = select_condition(sims, y, thresholds)
    refusing, complying = zip(*data["suffixes"], strict=True)
    pos = _suffix_pooled(model, data["questions"], refusing, behaviour_layers)
    neg = _suffix_pooled(model, data["questions"], complying, behaviour_layers)
    behaviour = {layer: pairwise_pc(pos[layer], neg[layer]) for layer in behaviour_layers}
    return conditions[rule.layer], rule, behaviour

