"""lowres_safety: is a low-resource safety failure a representation failure or an action failure?

Load a chat model as a TransformerLens bridge, extract multilingual activations, find the
harmfulness direction, and measure where it separates and where the model acts on it.
"""

from . import (activations, data, directions, evaluation, generation, hooks, judges, methods, models, plots, presets,
               probing, prompt_files, report, steering, utility)
from .activations import ActivationSet, extract
from .data import PromptSet
from .gate import Gate
from .generation import generate
from .models import load_model, show_tokens
from .prompt_files import load_prompts
from .notebook import notebook_setup

__all__ = [
    "ActivationSet",
    "Gate",
    "PromptSet",
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
