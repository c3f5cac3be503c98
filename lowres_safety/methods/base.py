"""The shared shape of intervention methods (see the package docstring)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from ..activations import ActivationSet
from ..data import PromptSet, language_seed
from ..hooks import Hook
from ..presets import Preset

__all__ = ["ADAPTED_FROM", "Arms", "Context", "Method", "Target", "adapted_from", "arms_of", "check_adapted_from",
           "digest", "one_arm", "per_class_sample", "per_language_sample"]


#: Where adapted AdaSteer and CAST take their examples: every low-resource language pooled (released), or each target.
ADAPTED_FROM = ("pooled", "target")


def check_adapted_from(value: str) -> None:
    if value not in ADAPTED_FROM:
        raise ValueError(f"adapted_from must be one of {ADAPTED_FROM}, got {value!r}")


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
    # the adapted baselines' examples: k per class from each low-resource language, pooled, one set for every
    # target (compute_adapted_adasteer_vectors.py, run_cast_steering.py::polyrefuse_budget_pairs); every layer.
    # None: each target's own pool (the per-target variant)
    adaptation: ActivationSet | None = None
    upstream: dict = field(default_factory=dict)  # method name -> its authors' files, e.g. {"adasteer": DIR}


@dataclass(frozen=True)
class Target:
    """One target language: a calibration pool (never evaluated on) and the held-out prompts."""

    language: str
    pool: ActivationSet  # t_post_inst at every layer a method reads
    held_out: ActivationSet  # at least the gate layer
    tune: PromptSet | None = None  # where a method tunes per target (adapted CAST: the target's val split)


@runtime_checkable
class Method(Protocol):
    name: str

    @classmethod
    def fit(cls, ctx: Context) -> Method: ...

    def variants(self, ks: tuple[int, ...]) -> tuple[int, ...]: ...

    def hooks(self, target: Target, k: int) -> list[Hook]: ...

    def extras(self, target: Target, k: int) -> dict: ...


@dataclass(frozen=True)
class Arms:
    """What a method does to each held-out prompt of a target, grouped by intervention.

    Prompts with the same key get the same hooks, so their completions under one key are
    the same whichever method or k asked for them: :class:`~lowres_safety.pipelines.memo.
    CompletionMemo` generates each (prompt, key) once. A routed method (the gate) splits
    its prompts over two keys; ``columns`` (indexed by prompt id) are its per-prompt
    decisions for the completions table (``gate_score``, ``alpha``, ``ablated``).
    """

    keys: pd.Series  # prompt id -> arm key
    hooks: dict[str, list[Hook]]  # arm key -> hooks
    columns: pd.DataFrame | None = None


def digest(*parts) -> str:
    """A short stable hash of tensors, arrays and plain values: the part of an arm key that names a vector."""
    h = hashlib.sha256()
    for part in parts:
        data = part.detach().cpu().float().numpy() if isinstance(part, torch.Tensor) else part
        h.update(np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else repr(data).encode())
    return h.hexdigest()[:16]


def one_arm(target: Target, key: str, hooks: list[Hook]) -> Arms:
    """Every held-out prompt of ``target`` under one arm ``key``."""
    return Arms(pd.Series(key, index=target.held_out.prompts.frame["id"].to_numpy()), {key: hooks})


def arms_of(method: Method, target: Target, k: int, run: str) -> Arms:
    """``method.arms(target, k)`` where the method defines it, else one arm named for this fit (``run``).

    A method without ``arms`` may depend on anything fitted, so its key is unique to the
    run that fitted it: nothing is shared with another seed's fit.
    """
    if hasattr(method, "arms"):
        return method.arms(target, k)
    return one_arm(target, f"{method.name}-k{k}-{run}", method.hooks(target, k))


def per_class_sample(pool: ActivationSet, k: int, seed: int = 0) -> ActivationSet:
    """Up to ``k`` harmful and ``k`` harmless prompts of a pool (all of a class that has fewer), seeded."""
    y = pool.prompts.labels
    rng = np.random.default_rng(seed)
    ids = pool.prompts.frame["id"].to_numpy()
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), size=min(k, int((y == c).sum())), replace=False)
                           for c in (1, 0)])
    return pool.where(id=ids[pick].tolist())


def per_language_sample(pool: ActivationSet, k: int, seed: int = 0) -> ActivationSet:
    """:func:`per_class_sample` in each language of ``pool`` with its own seed, pooled (the released adapted
    baselines' draw, ``compute_adapted_adasteer_vectors.py::sample_budget_prompts``)."""
    ids = [i for lang in pool.prompts.languages
           for i in per_class_sample(pool.where(language=lang), k, language_seed(seed, lang)).prompts.frame["id"]]
    return pool.where(id=ids)


def adapted_from(k: int, pooled: ActivationSet | None) -> str:
    """The ``adapted_from`` column of an adapted baseline's row."""
    if k == 0:
        return "source languages"
    return "pooled " + ",".join(pooled.prompts.languages) if pooled is not None else "target"
