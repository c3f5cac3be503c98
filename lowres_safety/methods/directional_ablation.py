"""The released ``directional_ablation`` baseline: v̂ removed at the block outputs of a layer range.

Source: github rashadaziz/low-resource-safety ``scripts/routing_refusal/intervene_and_generate.py``
(``load_direction_vector``, ``build_hook_factory``), ``configs/intervention/directional_ablation.yaml``
and ``src/multilingual_latent_safety/interventions.py::make_directional_ablation_hook``.

- h ← h − (h·v̂)v̂ at ``blocks.{l}.hook_resid_post`` for l in ``range(18, min(36, n_layers))``,
  every token (prompt, padding and generated); not Arditi et al.'s three sites at every layer
  (that is :class:`~lowres_safety.methods.Ablation`, this toolkit's ``ablation`` row).
- v̂ is the difference of means at ``t_post_inst`` of the train prompts, read at the range's
  last layer: from English by default (the same vector for every target), from each target's
  own prompts (``source="per_language"``), or the high-resource pc1-of-directions
  (``source="hrl_pooled"``, :func:`~lowres_safety.directions.pc1_of_directions`;
  the released ``hrl_pooled`` and ``hrl_pooled_dim`` both read that one by default).

Not in ``steer``'s default table (it was a separate released experiment, on harmful test
prompts); fit it with ``steering.fit_methods(..., methods=[...])`` or use it on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import directions as dirs
from .. import hooks as H
from ..data import in_tier
from .base import Arms, Context, Target, digest, one_arm
from .unconditional import NoIntervention

__all__ = ["LAYER_RANGE", "SOURCES", "DirectionalAblation", "source_direction"]

#: The released range (``layer_range: {start: 18, end: 36}``), clipped to the model's depth.
LAYER_RANGE = (18, 36)


def _language(acts, language: str, layer: int) -> torch.Tensor:
    return dirs.diff_of_means(acts.where(language=language))[acts.layer_index(layer), acts.position_index("t_post_inst")]


def _hrl_pooled(acts, layer: int) -> torch.Tensor:
    high = in_tier(acts.prompts.languages, "high")
    return dirs.pc1_of_directions(acts.where(language=high), high, layer)


#: Direction sources besides a language code: name -> (fit activations, layer) -> direction (None: per target).
SOURCES = {"per_language": lambda acts, layer: None, "hrl_pooled": _hrl_pooled}


def source_direction(acts, source: str, layer: int) -> torch.Tensor | None:
    """The direction ``source`` names, at ``layer`` of the fit activations (None for ``"per_language"``)."""
    if source not in SOURCES and source not in acts.prompts.languages:
        raise ValueError(f"direction source {source!r}: not a language of the fit prompts "
                         f"({acts.prompts.languages}) nor one of {sorted(SOURCES)}")
    return SOURCES.get(source, lambda a, at: _language(a, source, at))(acts, layer)


@dataclass(frozen=True)
class DirectionalAblation(NoIntervention):
    """v̂ ablated at every token of the block outputs in ``layers``."""

    name = "directional_ablation"
    direction: torch.Tensor | None = None  # None with source="per_language": each target's own
    layers: tuple[int, ...] = ()
    source: str = "en"

    @classmethod
    def fit(cls, ctx: Context, source: str = "en", layer_range: tuple[int, int] = LAYER_RANGE,
            direction_layer: int | None = None) -> DirectionalAblation:
        layers = tuple(range(layer_range[0], min(layer_range[1], ctx.n_layers)))
        if not layers:
            raise ValueError(f"the layer range {layer_range} holds no layer of this {ctx.n_layers}-layer model; pass "
                             "layer_range=(start, end)")
        at = layers[-1] if direction_layer is None else direction_layer
        return cls(source_direction(ctx.acts, source, at), layers, source)

    def direction_for(self, target: Target) -> torch.Tensor:
        """The ablated direction for ``target``: the fitted one, or the target's own (``per_language``)."""
        return self.direction if self.direction is not None else _language(target.pool, target.language,
                                                                           self.layers[-1])

    def hooks(self, target: Target, k: int) -> list[H.Hook]:
        return H.ablate(self.direction_for(target), self.layers, sites=("hook_resid_post",))

    def arms(self, target: Target, k: int) -> Arms:
        """One arm keyed by the layers and the direction the target gets."""
        key = f"directional_ablation:{self.layers}:{digest(self.direction_for(target))}"
        return one_arm(target, key, self.hooks(target, k))
