"""Old addresses of moved names: they still resolve, and warn once with the new address."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping

__all__ = ["moved"]


def moved(old: str, where: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for module ``old``: ``name`` in ``where`` resolves to ``where[name]``'s ``name``.

    ``where[name]`` is the new module's dotted path; the first access of each name warns
    (DeprecationWarning) and says the new address.
    """
    warned: set[str] = set()

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        target = where[name]
        module = importlib.import_module(target)
        if name not in warned:
            warned.add(name)
            new = target if target.rsplit(".", 1)[-1] == name else f"{target}.{name}"
            warnings.warn(f"{old}.{name} has moved to {new}; the old address will be removed",
                          DeprecationWarning, stacklevel=2)
        return module if target.rsplit(".", 1)[-1] == name else getattr(module, name)

    return __getattr__
