"""Batching of tokenized prompts: length-grouped batches, left padding, stopping a forward pass early.

Low-resource scripts tokenize several times longer than English, so batches are grouped
by length (padding waste is the main cost) and left-padded so the last prompt token is
position -1 in every row.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

__all__ = ["StopForward", "left_pad", "length_batches"]


def length_batches(lengths: list[int], batch_size: int, group_by_length: bool = True) -> list[np.ndarray]:
    """Row indices of each batch: consecutive in length order (little padding) or arrival order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = np.argsort(lengths, kind="stable") if group_by_length else np.arange(len(lengths))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def left_pad(rows: list[tuple[int, ...]], pad_id: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Left-padded token ids and the 0/1 attention mask that must go with them."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


class StopForward(Exception):
    """Raised by the deepest hook a caller needs: nothing past it is computed."""
