"""The contract between the toolkit's decoding loop and its hooks.

:func:`lowres_safety.generation.generate` runs a prompt in one forward pass (the
prefill), then one token per pass inside :func:`decoding`; hooks that act on "the last
prompt token" or decide once per sequence read :func:`is_decoding` instead of guessing
from the sequence length. :func:`prompt_attention` hands the prefill's attention mask to
hooks that pool over prompt tokens.

Hooks that decide once per prompt (the routed gate, AdaSteer, CAST, the ``"last"`` scope)
need this loop: TransformerLens's own ``model.generate`` (and Hugging Face's) runs every
decoding step as a new forward pass with no such flag, so they would decide again on
every generated token. :func:`check_decoding_loop` makes them say so instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

from torch import Tensor

__all__ = ["Hook", "check_decoding_loop", "decoding", "is_decoding", "prompt_attention", "prompt_mask",
           "toolkit_generation"]

#: A TransformerLens forward hook: ``(hook_name, fn(activation, hook) -> activation)``.
Hook = tuple[str, Callable]

_DECODING: ContextVar[bool] = ContextVar("lowres_safety_decoding", default=False)
_MASK: ContextVar[Tensor | None] = ContextVar("lowres_safety_prompt_mask", default=None)
_LOOP: ContextVar[bool] = ContextVar("lowres_safety_generation", default=False)


@contextmanager
def _setting(var: ContextVar, value):
    """``var`` set to ``value`` while the block runs, restored after it (errors too)."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def decoding():
    """Mark forward passes inside as KV-cached decoding steps (one new token per row)."""
    return _setting(_DECODING, True)


def is_decoding() -> bool:
    return _DECODING.get()


def prompt_attention(mask: Tensor):
    """Make the prefill's ``[batch, pos]`` attention mask readable by hooks (:func:`prompt_mask`)."""
    return _setting(_MASK, mask)


def prompt_mask() -> Tensor | None:
    """The attention mask of the prompt being prefilled, where the caller set one; else None."""
    return _MASK.get()


def toolkit_generation():
    """Mark forward passes inside as the toolkit's own generation loop (prefill, then :func:`decoding` steps)."""
    return _setting(_LOOP, True)


def _foreign_generate() -> str | None:
    """The library whose ``generate`` is on the call stack (TransformerLens or transformers), if any."""
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "generate":
            for library in ("transformer_lens", "transformers"):
                if f"{library}/" in code.co_filename.replace("\\", "/"):
                    return library
        frame = frame.f_back
    return None


def check_decoding_loop(what: str) -> None:
    """Raise if a hook that decides once per prompt runs inside another library's ``generate``.

    Outside any generation (a plain forward pass is a prefill) and inside
    :func:`lowres_safety.generation.generate` it returns at once.
    """
    if _LOOP.get():
        return
    library = _foreign_generate()
    if library is not None:
        raise RuntimeError(
            f"{what} decides once per prompt, at the prefill, and needs lowres_safety's decoding loop: {library}'s "
            "generate runs each decoding step as a new forward pass, so it would decide again on every generated "
            "token. Generate with lowres_safety.generate(model, prompts, hooks) instead.")
