"""The paper's fix: the low-rank gate, recalibrated per language with k examples, routes each prompt."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from .. import hooks as H
from ..data import language_seed
from ..gate import Gate
from .base import Arms, Context, Target, digest
from .unconditional import Addition

__all__ = ["GateRouting"]


@dataclass(frozen=True)
class GateRouting:
    """Steer rows the gate calls harmful (+α·v̂), ablate v̂ from the others (:func:`hooks.route`).

    k = 0 keeps the source threshold; k > 0 recalibrates with k examples per class of the
    target's pool (``Context.recalibration``: the released code's refit by default), drawn
    with the language's own seed (:func:`data.language_seed`; the released
    ``conditional_vhrl.py`` seeds each language's draw apart too).
    """

    name = "gate"
    gate: Gate
    direction: torch.Tensor
    alpha: float
    n_layers: int
    scope: str = "from_last"
    ablation: str = "gate_layer"
    recalibration: str = "paper"
    seed: int = 0
    _recalibrated: dict = field(default_factory=dict, repr=False, compare=False)  # language, k -> Gate

    @classmethod
    def fit(cls, ctx: Context) -> GateRouting:
        rank = None if ctx.preset is None else min(ctx.preset.rank, len(ctx.acts.prompts.languages))
        gate = Gate(rank=rank, seed=ctx.seed).fit(ctx.acts, ctx.layer, "t_post_inst", ctx.acts.prompts.languages)
        return cls(gate, ctx.direction, ctx.alpha, ctx.n_layers, ctx.scope, ctx.ablation, ctx.recalibration, ctx.seed)

    def variants(self, ks) -> tuple[int, ...]:
        return tuple(ks)

    def gate_for(self, target: Target, k: int) -> Gate:
        if k == 0:
            return self.gate
        if (target.language, k) not in self._recalibrated:  # hooks() and extras() share one recalibration
            seed = language_seed(self.seed, target.language)  # each language its own draw, as released
            self._recalibrated[target.language, k] = self.gate.recalibrate(target.pool, k, seed=seed,
                                                                           method=self.recalibration)
        return self._recalibrated[target.language, k]

    def gates(self) -> dict[str, Gate]:
        """The source gate and every gate recalibrated so far, named ``"source"`` and ``"<language>-k<k>"``."""
        return {"source": self.gate, **{f"{lang}-k{k}": g for (lang, k), g in self._recalibrated.items()}}

    def hooks(self, target: Target, k: int) -> list[H.Hook]:
        return H.route(self.gate_for(target, k), self.direction, self.alpha, n_layers=self.n_layers,
                       scope=self.scope, ablation=self.ablation)

    def arms(self, target: Target, k: int) -> Arms:
        """The routing as two arms: prompts the gate calls harmful get :class:`Addition`'s hooks, the others the
        ablation arm (the routed hook with every row ablated).

        The decision is the gate's margin on ``target.held_out`` at its layer, the
        activation the routed hook reads in the prefill; so each arm's completions are the
        routed run's, and the gate at any k costs no generation beyond the two arms. (A
        batch holding other prompts pads differently, which can move the last digits.)
        """
        gate = self.gate_for(target, k)
        ids = target.held_out.prompts.frame["id"].to_numpy()
        margin = gate.margin(target.held_out.at(gate.layer_, "t_post_inst").float()).cpu()
        harmful = (margin >= 0).numpy()
        add = Addition(self.direction, self.alpha, gate.layer_, self.scope)
        ablate = f"gate-ablation:{gate.layer_}:{self.ablation}:{self.n_layers}:{digest(self.direction)}"
        keys = pd.Series([add.signature() if h else ablate for h in harmful], index=ids)
        columns = pd.DataFrame({"gate_score": margin.numpy(), "alpha": harmful * float(self.alpha),
                                "ablated": ~harmful}, index=ids)
        return Arms(keys, {add.signature(): add.hooks(target, k), ablate: self._ablation_arm(gate.layer_)}, columns)

    def _ablation_arm(self, layer: int) -> list[H.Hook]:
        """The routed hook with every row decided harmless: v̂ ablated where the routing ablates, nothing added."""
        def decide(x: torch.Tensor) -> H.Decision:
            n = x.shape[0]
            return torch.zeros(n), torch.zeros(n, dtype=x.dtype), torch.ones(n, dtype=torch.bool)

        return H.ABLATIONS[self.ablation](H.Steer(decide, self.direction, layer, scope=self.scope), self.n_layers,
                                          H.ARDITI_SITES)

    def extras(self, target: Target, k: int) -> dict:
        return {"gate_balanced_accuracy": self.gate_for(target, k).balanced_accuracy(target.held_out)}
