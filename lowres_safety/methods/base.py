"""The shared shape of intervention methods (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..activations import ActivationSet
from ..hooks import Hook
from ..presets import Preset

__all__ = ["Context", "Method", "Target", "per_class_sample"]


@dataclass(frozen=True)
class Context:
    """What every method is fitted from: source-language activations and the shared steering settings."""

    model: Any  # the TransformerLens bridge (CAST pools prompt states itself)
    acts: ActivationSet  # source languages, t_post_inst, every layer a method reads
    layer: int  # the gate / steering layer
    direction: torch.Tensor  # [d_model], unit: the pooled source harmfulness direction at ``layer``
    alpha: float  # the paper's strength, λ·(q75 harmful − q25 harmless)
    n_layers: int
    strength: float = 1.0  # λ
    scope: str = "from_last"  # where addition and the gate add α·v̂
    ablation: str = "gate_layer"  # where the gate ablates (hooks.ABLATIONS)
    recalibration: str = "paper"  # gate.RECALIBRATIONS
    seed: int = 0
    preset: Preset | None = None


@dataclass(frozen=True)
class Target:
    """One target language: a calibration pool (never evaluated on) and the held-out prompts."""

    language: str
    pool: ActivationSet  # t_post_inst at every layer a method reads
    held_out: ActivationSet  # at least the gate layer


@runtime_checkable
class Method(Protocol):
    name: str

    @classmethod
    def fit(cls, ctx: Context) -> Method: ...

    def variants(self, ks: tuple[int, ...]) -> tuple[int, ...]: ...

    def hooks(self, target: Target, k: int) -> list[Hook]: ...

    def extras(self, target: Target, k: int) -> dict: ...


def per_class_sample(pool: ActivationSet, k: int, seed: int = 0) -> ActivationSet:
    """Up to ``k`` harmful and ``k`` harmless prompts of a pool (all of a class that has fewer), seeded."""
    y = pool.prompts.labels
    rng = np.random.default_rng(seed)
    ids = pool.prompts.frame["id"].to_numpy()
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), size=min(k, int((y == c).sum())), replace=False)
                           for c in (1, 0)])
    return pool.where(id=ids[pick].tolist())
