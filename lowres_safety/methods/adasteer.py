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

**Which way the vectors point** (the anchors' order decides the sign). Upstream's RD
anchors are ``first`` = borderline requests the model complies with and ``second`` = clear
refusals (MuyuenLP/AdaSteer ``configs/llama31_RD.ini``,
``data/anchors/llama31/harmful_break_or_not``), so RD = a − b points toward compliance and
the hand-set negative coefficients push toward refusal. The released *adapted* script sets
a = harmful, b = harmless, which flips that meaning with the same constants: Llama-3.1-8B
then adds −0.83·(harmful − harmless) to a harmful-looking prompt (away from refusal),
Qwen2.5-7B +0.2, and Gemma-2-9B's adaptivity is inverted (−0.08 at harmful, +0.08 at
harmless). This toolkit follows each variant as released:

- **k = 0** (the released zero-shot run used upstream's vectors): upstream's files where
  the user has them (:meth:`AdaSteerVectors.from_upstream`, ``steer --adasteer-vectors``);
  else upstream's meaning built from the source prompts, a = those the model complies
  with (harmless), b = those it refuses (harmful), so RD = μ_harmless − μ_harmful (the
  anchors are not upstream's borderline pairs).
- **k = 32** ("adapted", ``compute_adapted_adasteer_vectors.py``): a = harmful,
  b = harmless, RD = HD = μ_harmful − μ_harmless (not normalised), from 32 + 32 train
  prompts of **each low-resource language, pooled** (192 + 192 with the paper's six), one
  set for every target (:attr:`Context.adaptation`). ``adapted_from="target"`` (a named
  option, this toolkit's earlier default) builds them from each target's own pool instead.

The layers and constants are the released hand-set ones for Qwen2.5-7B, Gemma-2-9B and
Llama-3.1-8B (:mod:`presets`); neither repository has code that fits them. For any other
model this toolkit sets them by one documented rule: both coefficients read at the
steering layer, β = 0 (HD = RD already carries it) and, with c = λ / n_layers (one mean
difference in all, summed over the layers, at the harmful anchor; nothing at the harmless
one), α = clamp(c·(1 − s/100), 0, c) for the adapted vectors (s = 0 at harmful) and
α = clamp(−c·s/100, −c, 0) for the zero-shot ones (s = 100 at harmful, RD toward
compliance): both add +c·(μ_harmful − μ_harmless) at a harmful prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from .. import hooks as H
from ..activations import ActivationSet
from ..presets import ClampedLinear
from . import upstream
from .base import Arms, Context, Target, adapted_from, check_adapted_from, digest, one_arm, per_language_sample

__all__ = ["ADAPTED_K", "AdaSteer", "AdaSteerVectors", "adasteer_hooks", "final_norm_of", "scaled_distance"]

#: Examples per class the adapted variant rebuilds its vectors from (compute_adapted_adasteer_vectors.py).
ADAPTED_K = 32


def scaled_distance(h: Float[Tensor, "batch d_model"], mu_a: Float[Tensor, " d_model"],
                    mu_b: Float[Tensor, " d_model"]) -> Float[Tensor, " batch"]:
    """100 · (h − μ_a)·u / ‖μ_b − μ_a‖ with u = (μ_b − μ_a)/‖μ_b − μ_a‖: 0 at class a, 100 at class b."""
    gap = (mu_b - mu_a).to(h.device, h.dtype)
    return 100.0 * ((h - mu_a.to(h.device, h.dtype)) @ gap) / gap.dot(gap)


@dataclass(frozen=True)
class AdaSteerVectors:
    """Per-layer anchors (class a and class b means), RD = a − b and HD (= RD unless upstream's files give one).

    ``hd`` and the β anchors (``beta_a``, ``beta_b``) are None when built here: HD = RD and β
    reads the same anchors, as the released adapted script writes them. Upstream's files
    (:meth:`from_upstream`) carry their own.
    """

    mu_a: Float[Tensor, "layer d_model"]
    mu_b: Float[Tensor, "layer d_model"]
    hd: Float[Tensor, "layer d_model"] | None = None
    beta_a: Float[Tensor, "layer d_model"] | None = None
    beta_b: Float[Tensor, "layer d_model"] | None = None
    rd_file: Float[Tensor, "layer d_model"] | None = None  # upstream's mean_diff.pkl, used as released

    @property
    def rd(self) -> Float[Tensor, "layer d_model"]:
        return self.mu_a - self.mu_b if self.rd_file is None else self.rd_file

    @property
    def hd_vector(self) -> Float[Tensor, "layer d_model"]:
        return self.rd if self.hd is None else self.hd

    @property
    def beta_anchors(self) -> tuple[Tensor, Tensor]:
        return (self.mu_a, self.mu_b) if self.beta_a is None else (self.beta_a, self.beta_b)

    @classmethod
    def from_upstream(cls, folder) -> AdaSteerVectors:
        """Upstream's files for one model (``vectors/<model>/``, :func:`upstream.adasteer_arrays`), as released."""
        a = upstream.adasteer_arrays(folder)
        return cls(a["mu_a"], a["mu_b"], a["hd"], a["beta_a"], a["beta_b"], a["rd"])

    @classmethod
    def from_acts(cls, acts: ActivationSet, position: str = "t_post_inst", *, toward: str = "harmful",
                  final_norm: Callable[[Tensor], Tensor] | None = None) -> AdaSteerVectors:
        """``toward="harmful"``: a = harmful, b = harmless (the released adapted script);
        ``"compliance"``: a = harmless (complied with), b = harmful (refused), upstream's meaning.

        ``final_norm`` (the model's final norm, :func:`final_norm_of`): the last layer's anchors
        are read after it, as the released script's ``output.hidden_states[layer + 1]`` is for
        the last layer in Hugging Face models; None keeps the block output there.
        """
        if toward not in ("harmful", "compliance"):
            raise ValueError(f"toward must be 'harmful' or 'compliance', got {toward!r}")
        pi = acts.position_index(position)
        y = torch.from_numpy(acts.prompts.labels.astype(bool))
        if y.all() or not y.any():
            raise ValueError("AdaSteer's anchors need harmful and harmless prompts")
        x = acts.acts[:, :, pi].float().clone()  # [prompt, layer, d_model]; the set's own stays as it is
        if list(acts.layers) != list(range(len(acts.layers))):
            raise ValueError(f"AdaSteer needs every layer from 0 extracted; got {list(acts.layers)}")
        if final_norm is not None:
            with torch.no_grad():
                x[:, -1] = final_norm(x[:, -1, None])[:, 0].float()
        harmful, harmless = x[y].mean(0), x[~y].mean(0)
        return cls(harmful, harmless) if toward == "harmful" else cls(harmless, harmful)


def final_norm_of(model) -> Callable[[Tensor], Tensor] | None:
    """The bridge's final norm on ``[batch, pos, d_model]`` states (None without a model)."""
    if model is None:
        return None
    norm = model.ln_final
    return lambda h: norm(h.to(model.cfg.device, model.cfg.dtype)).cpu()


def adasteer_hooks(vectors: AdaSteerVectors, alpha_layer: int, alpha_rule: ClampedLinear, beta_layer: int,
                   beta_rule: ClampedLinear) -> list[H.Hook]:
    """Read α and β at the prefill; add α·RD[l] + β·HD[l] to every layer's block output on generated tokens."""
    rd, hd = vectors.rd, vectors.hd_vector
    anchors = {"alpha": (vectors.mu_a, vectors.mu_b), "beta": vectors.beta_anchors}
    state: dict[str, Tensor] = {}

    def observe(name: str, layer: int, rule: ClampedLinear):
        a, b = anchors[name]

        def fn(act: Float[Tensor, "batch pos d_model"], hook):
            if not H.is_decoding():
                H.check_decoding_loop("AdaSteer's hooks")
                state[name] = rule(scaled_distance(act[:, -1].float(), a[layer], b[layer])).detach()
            return act
        return fn

    def steer(layer: int):
        def fn(act: Float[Tensor, "batch pos d_model"], hook):
            if not H.is_decoding():
                return act
            if set(state) != {"alpha", "beta"} or state["alpha"].shape[0] != act.shape[0]:
                raise RuntimeError("a decoding step reached AdaSteer's hooks without a matching prefill")
            shift = (state["alpha"].to(act.device, act.dtype)[:, None, None] * rd[layer].to(act.device, act.dtype)
                     + state["beta"].to(act.device, act.dtype)[:, None, None] * hd[layer].to(act.device, act.dtype))
            return act + shift
        return fn

    n_layers = rd.shape[0]
    return ([(f"blocks.{alpha_layer}.hook_resid_post", observe("alpha", alpha_layer, alpha_rule)),
             (f"blocks.{beta_layer}.hook_resid_post", observe("beta", beta_layer, beta_rule))]
            + [(f"blocks.{layer}.hook_resid_post", steer(layer)) for layer in range(n_layers)])


Rules = tuple[int, ClampedLinear, int, ClampedLinear]  # alpha layer, alpha rule, beta layer, beta rule


@dataclass(frozen=True)
class AdaSteer:
    """AdaSteer with the released code's coefficient rules; k = 0 zero-shot, k = 32 adapted vectors."""

    name = "adasteer"
    vectors: AdaSteerVectors  # zero-shot: upstream's meaning (RD toward compliance)
    zero_shot_rules: Rules
    adapted_rules: Rules
    adaptation: ActivationSet | None = None  # the pooled low-resource examples; None: each target's pool
    seed: int = 0
    final_norm: Callable[[Tensor], Tensor] | None = field(default=None, repr=False, compare=False)
    _adapted: dict = field(default_factory=dict, repr=False, compare=False)  # pool key -> AdaSteerVectors

    @classmethod
    def fit(cls, ctx: Context, adapted_from: str = "pooled") -> AdaSteer:
        check_adapted_from(adapted_from)
        p = ctx.preset
        if p is not None and p.adasteer_alpha is not None:
            zero = adapted = (p.adasteer_alpha_layer, p.adasteer_alpha, p.adasteer_beta_layer, p.adasteer_beta)
        else:
            c = ctx.strength / ctx.n_layers
            zero = (ctx.layer, ClampedLinear(-c / 100, low=-c, high=0.0), ctx.layer, ClampedLinear(0.0))
            adapted = (ctx.layer, ClampedLinear(-c / 100, bias=c, low=0.0, high=c), ctx.layer, ClampedLinear(0.0))
        pool = ctx.adaptation if adapted_from == "pooled" else None
        folder = ctx.upstream.get("adasteer")
        norm = final_norm_of(ctx.model)
        zero_shot = (AdaSteerVectors.from_upstream(folder) if folder is not None
                     else AdaSteerVectors.from_acts(ctx.acts, toward="compliance", final_norm=norm))
        return cls(zero_shot, zero, adapted, pool, ctx.seed, norm)

    def variants(self, ks) -> tuple[int, ...]:
        return (0, ADAPTED_K)

    def vectors_for(self, target: Target, k: int) -> AdaSteerVectors:
        if k == 0:
            return self.vectors
        key = "pooled" if self.adaptation is not None else target.language
        if key not in self._adapted:
            pool = self.adaptation if self.adaptation is not None else target.pool
            self._adapted[key] = AdaSteerVectors.from_acts(per_language_sample(pool, k, self.seed),
                                                           final_norm=self.final_norm)
        return self._adapted[key]

    def rules_for(self, k: int) -> Rules:
        return self.zero_shot_rules if k == 0 else self.adapted_rules

    def hooks(self, target: Target, k: int) -> list[H.Hook]:
        alpha_layer, alpha_rule, beta_layer, beta_rule = self.rules_for(k)
        return adasteer_hooks(self.vectors_for(target, k), alpha_layer, alpha_rule, beta_layer, beta_rule)

    def arms(self, target: Target, k: int) -> Arms:
        """One arm keyed by the vectors and rules: a seed that builds the same ones (k = 0) shares its answers."""
        v = self.vectors_for(target, k)
        key = f"adasteer:{digest(v.rd, v.hd_vector, v.mu_a, v.mu_b, *v.beta_anchors, self.rules_for(k))}"
        return one_arm(target, key, self.hooks(target, k))

    def extras(self, target: Target, k: int) -> dict:
        upstream_files = k == 0 and self.vectors.rd_file is not None
        return {"adapted_from": "upstream files" if upstream_files else adapted_from(k, self.adaptation)}

