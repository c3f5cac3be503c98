"""lowres_safety: is a low-resource safety failure a representation failure or an action failure?

Load a chat model as a TransformerLens bridge, extract multilingual activations, find the
harmfulness direction, and measure where it separates and where the model acts on it.
"""

import warnings

# The TransformerLens bridge passes a KV cache to Hugging Face as ``past_key_values``, which transformers 5.24
# deprecates on every call; nothing a user of this package can act on, so it is not shown.
warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)

from . import activations, data, directions, evaluation, generation, hooks, judges, methods, models, plots, presets, probing, utility
from .data import prompt_files
from .pipelines import report, steering
from .activations import ActivationSet, extract
from .data import PromptSet
from .gate import Gate
from .generation import generate
from .lesion import ScriptLesion
from .models import load_model, show_tokens
from .data.prompt_files import load_prompts
from ._runtime.notebook import notebook_setup

__all__ = [
    "ActivationSet",
    "Gate",
    "PromptSet",
    "ScriptLesion",
    "activations",
    "data",
    "directions",
    "evaluation",
    "extract",
    "generate",
    "generation",
    "hooks",
    "judges",
    "load_model",
    "load_prompts",
    "methods",
    "models",
    "notebook_setup",
    "plots",
    "presets",
    "probing",
    "prompt_files",
    "report",
    "show_tokens",
    "steering",
    "utility",
]
__version__ = "0.1.0"
