"""The contract between the toolkit's decoding loop and its hooks.

:func:`lowres_safety.generation.generate` runs a prompt in one forward pass (the
prefill), then one token per pass inside :func:`decoding`; hooks that act on "the last
prompt token" or decide once per sequence read :func:`is_decoding` instead of guessing
from the sequence length. :func:`prompt_attention` hands the prefill's attention mask to
hooks that pool over prompt tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

from torch import Tensor

__all__ = ["Hook", "decoding", "is_decoding", "prompt_attention", "prompt_mask"]

#: A TransformerLens forward hook: ``(hook_name, fn(activation, hook) -> activation)``.
Hook = tuple[str, Callable]

_DECODING: ContextVar[bool] = ContextVar("lowres_safety_decoding", default=False)


@contextmanager
def decoding():
    """Mark forward passes inside as KV-cached decoding steps (one new token per row)."""
    token = _DECODING.set(True)
    try:
        yield
    finally:
        _DECODING.reset(token)


def is_decoding() -> bool:
    return _DECODING.get()


_MASK: ContextVar[Tensor | None] = ContextVar("lowres_safety_prompt_mask", default=None)


@contextmanager
def prompt_attention(mask: Tensor):
    """Make the prefill's ``[batch, pos]`` attention mask readable by hooks (:func:`prompt_mask`)."""
    token = _MASK.set(mask)
    try:
        yield
    finally:
        _MASK.reset(token)


def prompt_mask() -> Tensor | None:
    """The attention mask of the prompt being prefilled, where the caller set one; else None."""
    return _MASK.get()
