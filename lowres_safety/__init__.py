"""lowres_safety: is a low-resource safety failure a representation failure or an action failure?

Load a chat model as a TransformerLens bridge, extract multilingual activations, find the
harmfulness direction, and measure where it separates and where the model acts on it.
The modules follow the research question, in order:

1. is the representation there? :mod:`activations` (extract), :mod:`directions`
   (difference of means, pooled high-resource), :mod:`probing` (per-layer separability),
   :mod:`form` (how much of it the prompts' form explains), :mod:`recoverability` (how few
   examples a readout needs; :mod:`analyses` has the paper's own analyses as released);
2. is it acted on? :mod:`generation`, :mod:`judges`, :mod:`evaluation` (refusal rates, Δ, KL);
3. how big is the gap, and of which type? :mod:`calibration` (gap table, threshold shift,
   selectivity ceiling);
4. where does it break? :mod:`attribution` (logit attribution), :mod:`dose_response`,
   :mod:`selection` (Arditi et al.), :mod:`transfer` (PolyRefuse's matrix), :mod:`causal`;
5. can a few examples fix it? :mod:`gate` (the low-rank readout), :mod:`hooks`
   (interventions as TransformerLens hooks), :mod:`methods` (every method a steer table
   compares), :mod:`utility`; :mod:`fix` saves a fitted fix and :func:`load_fix` hooks it into
   the same model anywhere.

The experiments are library calls (:func:`diagnose`, :func:`steer`, with
:class:`DiagnoseConfig` and :class:`SteerConfig`); :mod:`data` reads prompts,
:mod:`organisms` builds the model organisms, :mod:`plots` draws every figure.
"""

import warnings

# The TransformerLens bridge passes a KV cache to Hugging Face as ``past_key_values``, which transformers 5.24
# deprecates on every call; nothing a user of this package can act on, so it is not shown.
warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
# peft reads ``model.is_gradient_checkpointing`` when it wraps the organism's adapter (the first load, before the
# merged copy is cached); transformers 5 deprecates that property. Nothing a user can act on either.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

from . import (  # noqa: E402
               activations,
               analyses,
               attribution,
               calibration,
               causal,
               data,
               directions,
               dose_response,
               evaluation,
               fix,
               form,
               gate,
               generation,
               grid,
               hooks,
               judges,
               methods,
               models,
               organisms,
               pipelines,
               plots,
               presets,
               probing,
               recoverability,
               selection,
               transfer,
               utility,
)
from ._runtime.deprecation import moved  # noqa: E402
from ._runtime.notebook import claim, notebook_setup  # noqa: E402
from .activations import ActivationSet, extract  # noqa: E402
from .data import PromptSet, in_tier, load_prompts, tier_of  # noqa: E402
from .fix import Fix, load_fix  # noqa: E402
from .gate import Gate  # noqa: E402
from .generation import generate  # noqa: E402
from .lesion import ScriptLesion  # noqa: E402
from .models import load_model, show_tokens  # noqa: E402
from .pipelines import DiagnoseConfig, DiagnoseResult, SteerConfig, SteerResult, diagnose, steer  # noqa: E402

__all__ = [
    "ActivationSet",
    "DiagnoseConfig",
    "DiagnoseResult",
    "Fix",
    "Gate",
    "PromptSet",
    "ScriptLesion",
    "SteerConfig",
    "SteerResult",
    "activations",
    "analyses",
    "attribution",
    "calibration",
    "causal",
    "claim",
    "data",
    "diagnose",
    "directions",
    "dose_response",
    "evaluation",
    "extract",
    "fix",
    "form",
    "gate",
    "generate",
    "generation",
    "grid",
    "hooks",
    "in_tier",
    "judges",
    "load_fix",
    "load_model",
    "load_prompts",
    "methods",
    "models",
    "notebook_setup",
    "organisms",
    "pipelines",
    "plots",
    "presets",
    "probing",
    "recoverability",
    "selection",
    "show_tokens",
    "steer",
    "tier_of",
    "transfer",
    "utility",
]
__version__ = "0.2.0"

#: Modules that moved in 0.2 (the old attribute still resolves, and warns once).
__getattr__ = moved(__name__, {"steering": "lowres_safety.pipelines.steering",
                               "report": "lowres_safety.pipelines.report",
                               "prompt_files": "lowres_safety.data.prompt_files"})
