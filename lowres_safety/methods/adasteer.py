"""AdaSteer (Zhao et al. 2025) as the paper's released code runs it.

Source: github rashadaziz/low-resource-safety, ``src/multilingual_latent_safety/adasteer.py``
(``scaled_harmful_distance``, ``linear_clamped``, ``AdaSteerState.observe_prefill``,
``make_adasteer_hook``) and ``scripts/routing_refusal/compute_adapted_adasteer_vectors.py``.

- **Two vectors per layer**, a rejection direction RD[l] and a harmfulness direction
  HD[l], each with two anchors (the means of class a and class b at that layer).
- **Two coefficients per prompt**, read once at the prefill from the last prompt token's
  block output: α at the alpha layer with RD's anchors, β at the beta layer with HD's.
  With u the unit vector from μ_a to μ_b, the scaled distance is
  ``s = 100 · (h − μ_a)·u / ‖μ_b − μ_a‖`` (0 at class a, 100 at class b), and each
  coefficient is ``clamp(slope·(s + offset) + bias, low, high)``
  (:class:`presets.ClampedLinear`).
- **Added at every layer's block output, on generated tokens only** (sequence length 1
  in the released port): h ← h + α·RD[l] + β·HD[l]. Upstream AdaSteer steers the prompt
  positions instead, in a second ``generate`` call after a first one that measured the
  coefficients; that two-pass scheme is not offered here. Because the first response
  token comes from the prefill, it is never steered, so AdaSteer's KL at the first token
  is 0 by construction.

**What cannot be matched here.** The upstream vectors (``vectors/{model}/{RD,HD}``) are
downloaded per model and are not available offline. Every variant therefore builds its
vectors the way the released *adapted* variant does: class a = harmful, class b =
harmless, RD = HD = mean(harmful) − mean(harmless) (not normalised) at each layer, from
the source languages' prompts (k = 0, "zero-shot") or from 32 + 32 target-language
examples (k = 32, "adapted"; the released code pools the six low-resource languages'
examples, here each target gets its own). The layers and constants are the released
hand-set ones for Qwen2.5-7B, Gemma-2-9B and Llama-3.1-8B (:mod:`presets`); neither
repository has code that fits them. For any other model this toolkit sets them by one
documented rule: both coefficients read at the steering layer, α = clamp(c·(1 − s/100),
0, c) with c = λ / n_layers (one mean difference in all, summed over the layers, at the
harmful anchor; nothing at the harmless one) and β = 0 (HD = RD already carries it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .. import hooks as H
from ..activations import ActivationSet
from ..presets import ClampedLinear
from .base import Context, Target, per_class_sample

__all__ = ["ADAPTED_K", "AdaSteer", "AdaSteerVectors", "adasteer_hooks", "scaled_distance"]

#: Examples per class the adapted variant rebuilds its vectors from (compute_adapted_adasteer_vectors.py).
ADAPTED_K = 32


def scaled_distance(h: Float[Tensor, "batch d_model"], mu_a: Float[Tensor, " d_model"],
                    mu_b: Float[Tensor, " d_model"]) -> Float[Tensor, " batch"]:
    """100 · (h − μ_a)·u / ‖μ_b − μ_a‖ with u = (μ_b − μ_a)/‖μ_b − μ_a‖: 0 at class a, 100 at class b."""
    gap = (mu_b - mu_a).to(h.device, h.dtype)
    return 100.0 * ((h - mu_a.to(h.device, h.dtype)) @ gap) / gap.dot(gap)


@dataclass(frozen=True)
class AdaSteerVectors:
    """Per-layer anchors and vectors: class a (harmful) and class b (harmless) means, RD = HD = a − b."""

    mu_a: Float[Tensor, "layer d_model"]
    mu_b: Float[Tensor, "layer d_model"]

    @property
    def rd(self) -> Float[Tensor, "layer d_model"]:
        return self.mu_a - self.mu_b

    @classmethod
    def from_acts(cls, acts: ActivationSet, position: str = "t_post_inst") -> AdaSteerVectors:
        pi = acts.position_index(position)
        y = torch.from_numpy(acts.prompts.labels.astype(bool))
        if y.all() or not y.any():
            raise ValueError("AdaSteer's anchors need harmful and harmless prompts")
        x = acts.acts[:, :, pi].float()  # [prompt, layer, d_model]
        if list(acts.layers) != list(range(len(acts.layers))):
            raise ValueError(f"AdaSteer needs every layer from 0 extracted; got {list(acts.layers)}")
        return cls(x[y].mean(0), x[~y].mean(0))


def adasteer_hooks(vectors: AdaSteerVectors, alpha_layer: int, alpha_rule: ClampedLinear, beta_layer: int,
                   beta_rule: ClampedLinear) -> list[H.Hook]:
    """Read α and β at the prefill; add α·RD[l] + β·HD[l] to every layer's block output on generated tokens."""
    rd = vectors.rd
    state: dict[str, Tensor] = {}

    def observe(name: str, layer: int, rule: ClampedLinear):
        def fn(act: Float[Tensor, "batch pos d_model"], hook):
            if not H.is_decoding():
                H.check_decoding_loop("AdaSteer's hooks")
                s = scaled_distance(act[:, -1].float(), vectors.mu_a[layer], vectors.mu_b[layer])
                state[name] = rule(s).detach()
            return act
        return fn

    def steer(layer: int):
        def fn(act: Float[Tensor, "batch pos d_model"], hook):
            if not H.is_decoding():
                return act
            if set(state) != {"alpha", "beta"} or state["alpha"].shape[0] != act.shape[0]:
                raise RuntimeError("a decoding step reached AdaSteer's hooks without a matching prefill")
            shift = (state["alpha"] + state["beta"]).to(act.device, act.dtype)[:, None, None] * rd[layer].to(
                act.device, act.dtype)  # HD = RD: both coefficients scale the same vector
            return act + shift
        return fn

    n_layers = rd.shape[0]
    return ([(f"blocks.{alpha_layer}.hook_resid_post", observe("alpha", alpha_layer, alpha_rule)),
             (f"blocks.{beta_layer}.hook_resid_post", observe("beta", beta_layer, beta_rule))]
            + [(f"blocks.{layer}.hook_resid_post", steer(layer)) for layer in range(n_layers)])


@dataclass(frozen=True)
class AdaSteer:
    """AdaSteer with the released code's coefficient rules; k = 0 zero-shot, k = 32 adapted vectors."""

    name = "adasteer"
    vectors: AdaSteerVectors
    alpha_layer: int
    alpha_rule: ClampedLinear
    beta_layer: int
    beta_rule: ClampedLinear
    seed: int = 0

    @classmethod
    def fit(cls, ctx: Context) -> AdaSteer:
        p = ctx.preset
        if p is not None and p.adasteer_alpha is not None:
            layers_rules = (p.adasteer_alpha_layer, p.adasteer_alpha, p.adasteer_beta_layer, p.adasteer_beta)
        else:
            c = ctx.strength / ctx.n_layers
            layers_rules = (ctx.layer, ClampedLinear(-c / 100, bias=c, low=0.0, high=c), ctx.layer, ClampedLinear(0.0))
        return cls(AdaSteerVectors.from_acts(ctx.acts), *layers_rules, seed=ctx.seed)

    def variants(self, ks) -> tuple[int, ...]:
        return (0, ADAPTED_K)

    def vectors_for(self, target: Target, k: int) -> AdaSteerVectors:
        if k == 0:
            return self.vectors
        return AdaSteerVectors.from_acts(per_class_sample(target.pool, k, self.seed))

    def hooks(self, target: Target, k: int) -> list[H.Hook]:
        return adasteer_hooks(self.vectors_for(target, k), self.alpha_layer, self.alpha_rule, self.beta_layer,
                              self.beta_rule)

    def extras(self, target: Target, k: int) -> dict:
        return {}
