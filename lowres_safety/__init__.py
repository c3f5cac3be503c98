"""lowres_safety: is a low-resource safety failure a representation failure or an action failure?

Load a chat model as a TransformerLens bridge, extract multilingual activations, find the
harmfulness direction, and measure where it separates and where the model acts on it.
"""

from . import activations, data, directions, models, plots, probing, report
from .activations import ActivationSet, extract
from .data import PromptSet
from .models import load_model, show_tokens

__all__ = [
    "ActivationSet",
    "PromptSet",
    "activations",
    "data",
    "directions",
    "extract",
    "load_model",
    "models",
    "plots",
    "probing",
    "report",
    "show_tokens",
]
__version__ = "0.1.0"
