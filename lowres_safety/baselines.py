"""Baselines the paper compared against, as hooks: adaptive and conditional steering.

Unconditional addition and directional ablation are :func:`hooks.add` and
:func:`hooks.ablate`. The two adaptive baselines below decide per prompt, like the gate,
from the last prompt token at one layer during the prefill (:class:`hooks.Steer`), and
steer the last prompt token and every generated token by default (``scope="from_last"``,
the paper's re-implementation and the same scope as :func:`hooks.route`), so the methods
differ only in their decision rule. ``scope="all"`` steers every prompt token too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .activations import ActivationSet
from .gate import balanced_f1_threshold as best_threshold
from .hooks import Decision, Hook, Steer, _finite, _unit_vector

__all__ = ["AdaSteerRule", "CastRule", "adasteer", "cast", "fit_adasteer", "fit_cast"]


def _source(acts: ActivationSet, languages, layer: int, position: str) -> tuple[Tensor, np.ndarray]:
    src = acts.where(language=list(languages)) if languages else acts
    y = src.prompts.labels
    if y.min() == y.max():
        raise ValueError("fitting a steering rule needs harmful and harmless source prompts")
    return src.at(layer, position).float(), y


@dataclass(frozen=True)
class AdaSteerRule:
    """α(x) = clip(slope · (x·v̂) + intercept, 0, alpha_max), fitted on source prompts."""

    slope: float
    intercept: float
    alpha_max: float
    layer: int

    def alpha(self, projection: Tensor) -> Tensor:
        return (self.slope * projection + self.intercept).clamp(0.0, self.alpha_max)


def fit_adasteer(acts: ActivationSet, direction, layer: int, alpha: float, *, position: str = "t_post_inst",
                 source_languages=None) -> AdaSteerRule:
    """Least-squares line from the projection on v̂ to the target strength (α harmful, 0 harmless).

    Follows AdaSteer (Zhao et al. 2025), whose per-input coefficient is a fitted linear
    function of the input's projection; ours uses one direction and one line where the
    original fits separate rejection and harmfulness directions with logistic rules.
    """
    v = _unit_vector(direction)
    x, y = _source(acts, source_languages, layer, position)
    p = (x @ v).double().numpy()
    slope, intercept = np.polyfit(p, y * _finite(alpha), 1)
    return AdaSteerRule(float(slope), float(intercept), 2 * abs(float(alpha)), layer)


def adasteer(rule: AdaSteerRule, direction, *, scope: str = "from_last") -> list[Hook]:
    """Add α(x)·v̂ with the per-prompt strength of an :class:`AdaSteerRule`."""
    v = _unit_vector(direction)

    def decide(x: Tensor) -> Decision:
        p = x @ v.to(x.device)
        return p, rule.alpha(p), torch.zeros_like(p, dtype=torch.bool)

    return Steer(decide, v, rule.layer, scope=scope).hooks()


@dataclass(frozen=True)
class CastRule:
    """Steer when cos(x, condition) > threshold; the threshold maximises macro F1 on source prompts."""

    condition: Tensor
    threshold: float
    layer: int


def fit_cast(acts: ActivationSet, condition, layer: int, *, position: str = "t_post_inst",
             source_languages=None) -> CastRule:
    """Find the similarity threshold on the source languages.

    Follows CAST (Lee et al. 2025), which steers only when the hidden state's similarity
    to a condition vector passes a threshold found by grid search; ours reads the last
    prompt token at one layer (the original averages the prompt's tokens) and uses the
    harmfulness direction as the condition unless given another.
    """
    c = _unit_vector(condition)
    x, y = _source(acts, source_languages, layer, position)
    sims = torch.nn.functional.cosine_similarity(x, c[None], dim=-1).numpy()
    return CastRule(c, best_threshold(sims, y), layer)


def cast(rule: CastRule, direction, alpha: float, *, scope: str = "from_last") -> list[Hook]:
    """Add α v̂ to the prompts whose similarity to the condition passes the rule's threshold."""
    v, alpha = _unit_vector(direction), _finite(alpha)

    def decide(x: Tensor) -> Decision:
        sim = torch.nn.functional.cosine_similarity(x, rule.condition.to(x.device)[None], dim=-1)
        on = sim > rule.threshold
        return sim, on.to(x.dtype) * alpha, torch.zeros_like(on)

    return Steer(decide, v, rule.layer, scope=scope).hooks()
