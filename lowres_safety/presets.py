"""Per-model settings the paper's released code fixes, used when a model's name matches.

Source: github rashadaziz/low-resource-safety. The gate (= steering) layer is
``conditional_layer`` in ``configs/model/*.yaml`` (repeated in
``scripts/activation_sweep/results.py::DEFAULT_MODEL_SPECS``); rank and budget come from
``configs/intervention/conditional_vhrl.yaml`` (rank 10 over its 10 high-resource
languages, budget k = 64 per class). AdaSteer's layers and clamped-linear constants are
``src/multilingual_latent_safety/adasteer.py::ADASTEER_SPECS``, which match upstream
AdaSteer's hand-set values (MuyuenLP/AdaSteer, ``For_Steering_*Model_adasteer.py``):
``coefficient = clamp(slope · (s + offset) + bias, low, high)`` of the scaled distance
``s`` (0 at the harmful anchor's projection, 100 at the harmless one's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .shipped import adapter_dir, shipped_name

__all__ = ["PRESETS", "ClampedLinear", "Preset", "preset_for"]


@dataclass(frozen=True)
class ClampedLinear:
    """AdaSteer's coefficient rule: clamp(slope·(s + offset) + bias, low, high); None = unbounded."""

    slope: float
    offset: float = 0.0
    bias: float = 0.0
    low: float | None = None
    high: float | None = None

    def __call__(self, s):
        """``s`` a float tensor of scaled distances; returns the coefficients."""
        value = self.slope * (s + self.offset) + self.bias
        if self.low is None and self.high is None:
            return value
        return value.clamp(min=self.low, max=self.high)


@dataclass(frozen=True)
class Preset:
    """The released code's settings for one model."""

    gate_layer: int
    rank: int = 10
    budget: int = 64
    adasteer_alpha_layer: int | None = None  # reads the rejection-direction coefficient
    adasteer_alpha: ClampedLinear | None = None
    adasteer_beta_layer: int | None = None  # reads the harmfulness-direction coefficient
    adasteer_beta: ClampedLinear | None = None
    source: str = "rashadaziz/low-resource-safety configs/model/*.yaml (conditional_layer), adasteer.py::ADASTEER_SPECS"


PRESETS: dict[str, Preset] = {
    "Qwen/Qwen2.5-7B-Instruct": Preset(
        15, adasteer_alpha_layer=5, adasteer_alpha=ClampedLinear(0.1, offset=-140.0, low=-0.2, high=0.0),
        adasteer_beta_layer=13, adasteer_beta=ClampedLinear(-0.06, offset=-50.0, low=-0.6, high=0.4)),
    "google/gemma-2-9b-it": Preset(
        20, adasteer_alpha_layer=12, adasteer_alpha=ClampedLinear(0.004, offset=-35.0, low=-0.02, high=0.06),
        adasteer_beta_layer=19, adasteer_beta=ClampedLinear(0.01, offset=-50.0, low=-0.06, high=0.02)),
    "meta-llama/Llama-3.1-8B-Instruct": Preset(
        10, adasteer_alpha_layer=8, adasteer_alpha=ClampedLinear(0.02, offset=60.0, low=-0.22, high=-0.08),
        adasteer_beta_layer=13, adasteer_beta=ClampedLinear(-0.05, offset=5.0, bias=-0.5, low=-0.75)),
}


def _organism_folder(name: str) -> Path | None:
    """The adapter folder behind an organism's name ("organism", its bridge name, or a folder), if it has a rule."""
    shipped = shipped_name(name)
    folder = adapter_dir(shipped) if shipped else Path(name)
    return folder if (folder / "ground_truth.json").is_file() else None


def preset_for(name: str) -> Preset | None:
    """The preset whose Hugging Face id matches ``name`` (an id, or a local folder named like one).

    A model organism made by the threshold recipe gets its rule's layer L* as the gate
    layer (from its ``ground_truth.json``): the layer where its decision is known to sit.
    """
    organism = _organism_folder(str(name))
    if organism is not None:
        layer = json.loads((organism / "ground_truth.json").read_text(encoding="utf-8"))["layer"]
        return Preset(layer, source=f"{organism.name}/ground_truth.json (the organism's rule layer L*)")
    key = str(name).rstrip("/").lower()
    for model_id, preset in PRESETS.items():
        if key == model_id.lower() or Path(key).name == model_id.split("/")[-1].lower():
            return preset
    return None
