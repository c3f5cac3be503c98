"""Model organisms: SmolLM2-135M-Instruct made to refuse by a rule we wrote, so the toolkit can be checked
against a construction we know.

| module | owns |
|---|---|
| ``recipe`` | :class:`RecipeConfig` and :func:`train`: the two-stage LoRA recipe of ``lowres-safety organism train`` |
| ``signal`` | stage 1: sharpen (or erase) the harmfulness signal along v̂ up to L* |
| ``upper_lora`` | training LoRA on the blocks above L* from frozen hidden states |
| ``ground_truth`` | :class:`GroundTruth`: v̂, L*, θ and the rule's prediction for any prompt |
| ``card`` | the model card written beside each adapter |

Loading a finished organism is :func:`lowres_safety.load_model` (``"organism"``,
``"organism-erased"`` or a folder); the lookup of shipped folders and the script lesion
stand at the models level (:mod:`lowres_safety.shipped`, :mod:`lowres_safety.lesion`).
"""

from .ground_truth import GroundTruth

__all__ = ["GroundTruth"]
