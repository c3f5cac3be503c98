"""The paper's analyses as library calls, each returning a tidy DataFrame (rows per language, macro rows by tier).

- :func:`recoverability`: how many target examples a readout needs (the released few-shot curves);
- :func:`compare_readouts`: is the high-resource subspace special? every released readout side by side;
- :func:`rank_sweep`: the gate at each subspace rank;
- :func:`subspace_transfer`: zero-shot gates from high-resource sources, alone or with one added language;
- :func:`ood_transfer`: the gate on another harmful-only data set, zero- and one-shot, by language and category;
- :func:`strength_sweep` and :func:`ablation_sweep`: refusal on generated text as the steering strength
  grows, and as the released directional ablation moves through the layers;
- :mod:`metrics`: the released scoring rules they share (metrics, thresholds, macro rows, seeds).

The diagnosis's quick analogue of the first is :func:`lowres_safety.recoverability.recoverability`.
"""

from . import metrics
from .ood import ood_transfer
from .rank import rank_sweep
from .readouts import compare_readouts
from .recoverability import recoverability
from .subspace_transfer import subspace_transfer
from .sweeps import ablation_sweep, peak_strengths, strength_sweep, tier_means

__all__ = ["ablation_sweep", "compare_readouts", "metrics", "ood_transfer", "peak_strengths", "rank_sweep",
           "recoverability", "strength_sweep", "subspace_transfer", "tier_means"]
