"""The unconditional references: no intervention, Arditi-style ablation, activation addition."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import hooks as H
from .base import Arms, Context, Target, digest, one_arm

__all__ = ["Ablation", "Addition", "NoIntervention"]


@dataclass(frozen=True)
class NoIntervention:
    """The model as it is."""

    name = "none"

    @classmethod
    def fit(cls, ctx: Context) -> NoIntervention:
        return cls()

    def variants(self, ks) -> tuple[int, ...]:
        return (0,)

    def hooks(self, target: Target, k: int) -> list[H.Hook]:
        return []

    def extras(self, target: Target, k: int) -> dict:
        return {}

    def signature(self) -> str:
        """The intervention, named by what it does: equal names, equal hooks (so equal completions)."""
        return self.name

    def arms(self, target: Target, k: int) -> Arms:
        """One arm for every prompt, keyed by :meth:`signature`: another fit or seed with the same vector shares it."""
        return one_arm(target, self.signature(), self.hooks(target, k))


@dataclass(frozen=True)
class Ablation(NoIntervention):
    """v̂ removed at every layer's resid_pre, attention and MLP outputs, every token (Arditi et al. 2024)."""

    name = "ablation"
    direction: torch.Tensor = None
    n_layers: int = 0

    @classmethod
    def fit(cls, ctx: Context) -> Ablation:
        return cls(ctx.direction, ctx.n_layers)

    def hooks(self, target: Target, k: int) -> list[H.Hook]:
        return H.ablate(self.direction, range(self.n_layers))

    def signature(self) -> str:
        return f"ablation:{self.n_layers}:{digest(self.direction)}"


@dataclass(frozen=True)
class Addition(NoIntervention):
    """α·v̂ added at the steering layer, at the context's scope, for every prompt."""

    name = "addition"
    direction: torch.Tensor = None
    alpha: float = 0.0
    layer: int = 0
    scope: str = "from_last"

    @classmethod
    def fit(cls, ctx: Context) -> Addition:
        return cls(ctx.direction, ctx.alpha, ctx.layer, ctx.scope)

    def hooks(self, target: Target, k: int) -> list[H.Hook]:
        return H.add(self.direction, self.alpha, self.layer, scope=self.scope)

    def signature(self) -> str:
        return f"addition:{self.layer}:{self.scope}:{digest(self.direction, float(self.alpha))}"
