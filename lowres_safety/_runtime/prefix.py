"""The tokens every prompt starts with, run once: a KV cache of the chat template's opening.

Every chat-formatted prompt of a model begins with the same tokens (SmolLM2-135M: the
system turn and the user header, 24 of a demo prompt's 63). A pass over a batch can start
from a cache of that prefix, computed with one row and expanded to the batch, and run only
the rest of each prompt. The values are the same: attention sees the same keys and
values, and position ids are passed so each token keeps its place counted from the
prompt's start (left padding sits between the prefix and the rest, masked).

Only for hooks that act on each position alone and alike at every position and row
(:func:`hooks.ablate`, :func:`hooks.add` with ``scope="all"``): they change the prefix in a
one-row pass as in the batch, so the prefix runs once under each such hook list. Hooks
that pick the last position or hold per-row state must never see a prefix pass; callers
promise which kind they pass (:func:`grid.next_token_grid`'s ``position_wise``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor
from transformers import DynamicCache

from .decoding import Hook, prompt_attention
from .lean import lean

__all__ = ["Prefix", "continuing", "expand"]


@dataclass(frozen=True)
class Prefix:
    """The shared leading token ids of a set of prompts."""

    ids: tuple[int, ...]

    @classmethod
    def shared(cls, encoded: Sequence[Sequence[int]], keep: int = 1, minimum: int = 4) -> Prefix | None:
        """The longest common prefix leaving ``keep`` tokens of every prompt; None if under ``minimum`` tokens."""
        common = os.path.commonprefix([tuple(ids) for ids in encoded]) if encoded else ()
        n = min(len(common), min(len(ids) for ids in encoded) - keep) if encoded else 0
        return cls(tuple(common[:n])) if n >= minimum else None

    def __len__(self) -> int:
        return len(self.ids)

    @torch.no_grad()
    def run(self, model, hooks: Sequence[Hook] = (), upto: int | None = None):
        """The prefix's KV cache (one row) under ``hooks``; ``upto``: stop after that block (what reads no deeper)."""
        ids = torch.tensor([self.ids], device=model.cfg.device)
        mask = torch.ones_like(ids)
        cache = DynamicCache(config=model.original_model.config)  # filled in place, so a stopped pass keeps it
        fwd = list(hooks) + ([(f"blocks.{upto}.hook_resid_post", _halt)] if upto is not None else [])
        try:
            with model.hooks(fwd_hooks=fwd), lean(model), prompt_attention(mask):
                model(ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        except _Halt:
            pass
        return cache

    def inputs(self, mask: Int[Tensor, "batch pos"]) -> tuple[Int[Tensor, "batch all"], Int[Tensor, "batch pos"]]:
        """For left-padded rest-of-prompt rows: the attention mask over prefix + rest, and their position ids."""
        full = torch.cat([torch.ones(mask.shape[0], len(self), dtype=mask.dtype, device=mask.device), mask], 1)
        positions = (len(self) + mask.cumsum(1) - 1).clamp_min(len(self))
        return full, positions



def continuing(prefix: Prefix | None, mask: Int[Tensor, "batch pos"], cache) -> tuple[Int[Tensor, "batch all"], dict]:
    """Attention mask and forward keywords (a fresh expanded ``cache``, position ids) for rows after ``prefix``.

    Without a prefix: ``mask`` as it is and no keywords, so callers pass the result either way.
    """
    if prefix is None:
        return mask, {}
    full, positions = prefix.inputs(mask)
    return full, {"past_key_values": expand(cache, mask.shape[0]), "position_ids": positions}


class _Halt(Exception):
    pass


def _halt(act, hook):
    raise _Halt


def expand(cache, rows: int):
    """A fresh cache holding a one-row ``cache`` once per row (updating it leaves ``cache`` as it was)."""
    out = copy.copy(cache)
    out.layers = []
    for layer in cache.layers:
        layer = copy.copy(layer)
        if getattr(layer, "keys", None) is not None:  # layers past a stopped pass stay empty
            layer.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
            layer.values = layer.values.expand(rows, *layer.values.shape[1:])
        out.layers.append(layer)
    return out
