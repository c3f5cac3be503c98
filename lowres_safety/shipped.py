"""The model organisms shipped inside the package, by name (no imports: models and presets both read it)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["SHIPPED", "adapter_dir", "organism_folder", "shipped_name"]

#: Name → what it is. Each is a folder under ``lowres_safety/resources`` (adapter, ``representation/``,
#: ``ground_truth.json``, ``recipe.json`` and a README stating the construction; or ``lesion.json`` naming the
#: organism whose adapters it lesions, see :mod:`lesion`).
SHIPPED = {
    "organism": "action-failure organism: refuses iff the projection on v-hat at L* exceeds a threshold "
                "learned on high-resource languages",
    "organism-erased": "the same organism unable to read Thai and Korean script (a lesion of its "
                       "tokenizer, lesion.py): representation failure by construction",
}


def adapter_dir(name: str = "organism") -> Path:
    """The folder of a shipped organism."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped organism {name!r}; shipped: {sorted(SHIPPED)}")
    return Path(str(resources.files("lowres_safety") / "resources" / name))


def organism_folder(name: str | Path) -> Path:
    """Where an organism lives: a shipped name's package folder, or ``name`` itself as a folder."""
    return adapter_dir(name) if name in SHIPPED else Path(name)


def shipped_name(name: str) -> str | None:
    """The shipped organism behind ``name`` (its own name, or a bridge label ending in ``+<name>``), if any."""
    tail = str(name).rsplit("+", 1)[-1]
    return tail if tail in SHIPPED and (tail == name or "+" in str(name)) else None
