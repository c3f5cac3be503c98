"""The paper's analyses as library calls, each returning a tidy DataFrame (rows per language, macro rows by tier).

- :func:`recoverability`: how many target examples a readout needs (the released few-shot curves);
- :func:`rank_sweep`: the gate at each subspace rank;
- :mod:`metrics`: the released scoring rules they share (metrics, thresholds, macro rows, seeds).

The diagnosis's quick analogue of the first is :func:`lowres_safety.recoverability.recoverability`.
"""

from . import metrics
from .rank import rank_sweep
from .recoverability import recoverability

__all__ = ["metrics", "rank_sweep", "recoverability"]
