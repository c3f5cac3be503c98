"""A fitted fix as a portable artifact: save it once, hook it into any bridge of the same model.

``steer`` fits the paper's fix (the gate, the direction, α, the layer) and scores it; a
researcher who wants to *use* the fix elsewhere (another notebook, a serving process, a
colleague's machine) needs only what the hooks read. :class:`Fix` holds that:

- the unit harmfulness direction v̂ and the strength α, the gate layer and where the
  routing hook acts (``scope``, ``ablation``, the model's depth);
- the source gate and, per target language, the gate recalibrated with k examples per
  class (standardiser, readout and threshold: :meth:`Gate.save`'s file);
- the model's fingerprint (:func:`models.weights_fingerprint`, id, width and depth), so
  hooks for another model are refused with an error instead of steering it with a
  direction from elsewhere.

On disk it is a folder: ``fix.json`` (settings, fingerprint, the gates' index),
``direction.safetensors`` and ``gates/*.safetensors``. Write with :meth:`Fix.save`, read
with :func:`load_fix`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor

from . import hooks as H
from ._runtime.files import atomic_save, atomic_write_text
from .gate import Gate
from .models import model_id, weights_fingerprint

__all__ = ["Fix", "fingerprint", "load_fix"]

_FORMAT = 1


def fingerprint(model) -> dict:
    """What identifies a model for a fix: its id, width, depth and a hash of its weights."""
    return {"model": model_id(model), "d_model": int(model.cfg.d_model), "n_layers": int(model.cfg.n_layers),
            "weights": weights_fingerprint(model)}


@dataclass
class Fix:
    """The paper's routed fix for one model: ``hooks(model, language)`` steers or ablates each prompt."""

    direction: Float[Tensor, " d_model"]  # unit
    alpha: float
    layer: int
    n_layers: int
    model: dict  # :func:`fingerprint` of the model it was fitted on
    gates: dict[str, Gate] = field(default_factory=dict)  # "source", or "<language>-k<k>"
    scope: str = "from_last"
    ablation: str = "gate_layer"

    def gate(self, language: str | None = None, k: int | None = None) -> Gate:
        """The gate for ``language`` (its largest k unless ``k`` is given); the source gate when there is none."""
        if language is None:
            return self.gates["source"]
        own = {g.k_: g for name, g in self.gates.items() if name != "source" and g.language_ == language}
        if k is not None:
            if k == 0:
                return self.gates["source"]
            if k not in own:
                raise KeyError(f"no gate for {language!r} at k={k}; this fix has k={sorted(own)} for it")
            return own[k]
        return own[max(own)] if own else self.gates["source"]

    def hooks(self, model, language: str | None = None, k: int | None = None) -> list[H.Hook]:
        """Routing hooks for ``model``, refused unless it is the model this fix was fitted on."""
        check_same_model(self.model, fingerprint(model))
        return H.route(self.gate(language, k), self.direction, self.alpha, n_layers=self.n_layers, scope=self.scope,
                       ablation=self.ablation)

    def save(self, folder: str | Path) -> Path:
        """``fix.json``, ``direction.safetensors`` and one ``gates/<name>.safetensors`` per gate, each atomic."""
        folder = Path(folder)
        atomic_save({"direction": self.direction.float().contiguous()}, folder / "direction.safetensors")
        for name, gate in self.gates.items():
            gate.save(folder / "gates" / f"{name}.safetensors")
        meta = {"format": _FORMAT, "alpha": self.alpha, "layer": self.layer, "n_layers": self.n_layers,
                "scope": self.scope, "ablation": self.ablation, "model": self.model, "gates": sorted(self.gates)}
        atomic_write_text(folder / "fix.json", json.dumps(meta, indent=2))
        return folder

    @classmethod
    def from_routing(cls, routing, model) -> Fix:
        """From a fitted :class:`methods.GateRouting`: its source gate and every gate it recalibrated."""
        v = torch.as_tensor(routing.direction).float()
        return cls(v / v.norm(), float(routing.alpha), int(routing.gate.layer_), int(routing.n_layers),
                   fingerprint(model), routing.gates(), routing.scope, routing.ablation)


def check_same_model(fitted: dict, given: dict) -> None:
    """Raise with both fingerprints when ``given`` is not the model the fix was fitted on."""
    if fitted != given:
        differ = [key for key in fitted if fitted.get(key) != given.get(key)]
        raise ValueError(f"this fix was fitted on {fitted['model']} (fingerprint {fitted['weights'][:12]}); the model "
                         f"given is {given['model']} (fingerprint {given['weights'][:12]}): they differ in {differ}. "
                         "A direction and gate from one model mean nothing in another: fit the fix on this model")


def load_fix(path: str | Path) -> Fix:
    """Read a fix written by :meth:`Fix.save` (or by ``steer``, under ``fix/`` of its output)."""
    folder = Path(path)
    meta_path = folder / "fix.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} holds no fix.json: pass the folder a fix was saved to (steer writes "
                                "one under fix/ of its output)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{meta_path} is of format {meta.get('format')}; this version reads format {_FORMAT}")
    gates = {name: Gate.load(folder / "gates" / f"{name}.safetensors") for name in meta["gates"]}
    direction = load_file(str(folder / "direction.safetensors"))["direction"]
    return Fix(direction, meta["alpha"], meta["layer"], meta["n_layers"], meta["model"], gates, meta["scope"],
               meta["ablation"])
