"""The paper's analyses as library calls, each returning a tidy DataFrame (rows per language, macro rows by tier).

- :func:`recoverability`: how many target examples a readout needs (the released few-shot curves);
- :func:`rank_sweep`: the gate at each subspace rank;
- :func:`subspace_transfer`: zero-shot gates from high-resource sources, alone or with one added language;
- :mod:`metrics`: the released scoring rules they share (metrics, thresholds, macro rows, seeds).

The diagnosis's quick analogue of the first is :func:`lowres_safety.recoverability.recoverability`.
"""

from . import metrics
from .rank import rank_sweep
from .recoverability import recoverability
from .subspace_transfer import subspace_transfer

__all__ = ["metrics", "rank_sweep", "recoverability", "subspace_transfer"]
