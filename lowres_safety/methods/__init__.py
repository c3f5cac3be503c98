"""Intervention methods, one shape: fitted on source activations, hooks for a target language.

Every method :func:`steering.evaluate` compares is a class with

- ``name`` (the table's ``method`` column),
- ``fit(ctx: Context) -> Method`` (a classmethod: everything learned from the source
  languages),
- ``variants(ks) -> tuple[int, ...]``: the numbers of target-language examples per class
  it can use (``ks`` are the user's gate budgets; 0 = zero-shot),
- ``hooks(target: Target, k: int) -> list[Hook]``: TransformerLens hooks for that
  language, and
- ``extras(target, k) -> dict``: extra columns for its row (e.g. the gate's accuracy).

:data:`METHODS` lists them by name; a new method is one new file defining such a class
and one line here (or pass your own instances' classes to ``steering.fit_methods``).
"""

from __future__ import annotations

from .adasteer import AdaSteer
from .base import Context, Method, Target
from .cast import Cast
from .directional_ablation import DirectionalAblation
from .gate import GateRouting
from .unconditional import Ablation, Addition, NoIntervention

__all__ = ["METHODS", "AdaSteer", "Ablation", "Addition", "Cast", "Context", "DirectionalAblation", "GateRouting",
           "Method", "NoIntervention", "Target"]

#: Every method a ``steer`` table compares, by name, in table order (:class:`DirectionalAblation`, the released
#: layer-range ablation, is fitted on request: ``steering.fit_methods(..., methods=[...])``).
METHODS: dict[str, type] = {m.name: m for m in (NoIntervention, Ablation, Addition, AdaSteer, Cast, GateRouting)}
