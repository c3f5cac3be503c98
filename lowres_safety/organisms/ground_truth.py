"""The threshold organism's decision rule, written down: refused iff h_L*[last prompt token] · v̂ > θ.

Saved beside the adapter (``ground_truth.json`` + ``direction.safetensors``), so a
diagnosis of the organism can be checked against what its construction predicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from .._runtime.files import atomic_write_text
from ..activations import ActivationSet
from ..calibration import gap_table
from ..directions import pooled, unit
from ..shipped import adapter_dir, shipped_name

__all__ = ["GroundTruth", "for_model"]


@dataclass(frozen=True)
class GroundTruth:
    """The organism's decision rule: refused iff the last prompt token's projection on v̂ at ``layer`` > θ."""

    layer: int
    direction: Float[Tensor, " d_model"]  # unit
    threshold: float  # θ: midpoint of the source harmful and harmless mean projections
    gap: float  # source harmful mean − harmless mean
    source: tuple[str, ...]

    @classmethod
    def fit(cls, acts: ActivationSet, layer: int, source) -> GroundTruth:
        present = tuple(lang for lang in source if lang in acts.prompts.languages)
        v = unit(pooled(acts, present)[acts.layer_index(layer), acts.position_index("t_post_inst")].float())
        x = acts.where(language=list(present)).at(layer, "t_post_inst").float() @ v
        y = acts.where(language=list(present)).prompts.labels.astype(bool)
        high, low = float(x[y].mean()), float(x[~y].mean())
        return cls(layer, v, (high + low) / 2, high - low, present)

    def rethreshold(self, acts: ActivationSet) -> GroundTruth:
        """The same v̂ with θ and the gap from the source-language prompts of ``acts`` (e.g. prompts no stage saw)."""
        present = [lang for lang in self.source if lang in acts.prompts.languages]
        part = acts.where(language=present)
        x, y = self.project(part), part.prompts.labels.astype(bool)
        high, low = float(x[y].mean()), float(x[~y].mean())
        return replace(self, threshold=(high + low) / 2, gap=high - low)

    def project(self, acts: ActivationSet) -> np.ndarray:
        return (acts.at(self.layer, "t_post_inst").float() @ self.direction).numpy()

    def predict(self, acts: ActivationSet) -> pd.DataFrame:
        """Per prompt: the projection and the refusal the rule predicts (``refused``)."""
        x = self.project(acts)
        frame = acts.prompts.frame[["id", "language", "subset", "source_id"]].copy()
        return frame.assign(projection=x, refused=x > self.threshold)

    def predicted_gap(self, acts: ActivationSet, seed: int = 0) -> pd.DataFrame:
        """The gap table the construction predicts (:func:`calibration.gap_table` on the rule's own projection and
        refusal per prompt): the failure type a diagnosis of this organism should find, with intervals."""
        return gap_table(self.predict(acts), seed=seed)

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        save_file({"direction": self.direction.contiguous()}, str(folder / "direction.safetensors"))
        meta = {"layer": self.layer, "threshold": self.threshold, "gap": self.gap, "source": list(self.source)}
        atomic_write_text(folder / "ground_truth.json", json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> GroundTruth:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "ground_truth.json").exists():
            raise ValueError(f"{folder} has no ground_truth.json: it was not made by the threshold recipe")
        meta = json.loads((folder / "ground_truth.json").read_text(encoding="utf-8"))
        return cls(meta["layer"], load_file(str(folder / "direction.safetensors"))["direction"], meta["threshold"],
                   meta["gap"], tuple(meta["source"]))


def for_model(name: str) -> GroundTruth | None:
    """The construction behind a model name (a shipped organism's name, its bridge label, or an adapter folder
    with ``ground_truth.json``); None for any other model."""
    shipped = shipped_name(str(name))
    folder = adapter_dir(shipped) if shipped else Path(str(name))
    return GroundTruth.load(folder) if (folder / "ground_truth.json").is_file() else None
