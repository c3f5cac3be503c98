"""Stage 1 of the threshold organism: a stronger harmfulness signal along v̂ at L*, learned below it.

The base model's pooled harmfulness direction separates harmful from harmless prompts
within each language, but too weakly for one threshold to serve every high-resource
language (measured in the README). Safety training in real models sharpens that signal
on the data it sees. This stage does the same, and only that: LoRA on the blocks
``first .. L*`` is trained so that, at L*'s last prompt token, the high-resource
languages' harmful prompts project at least ``margin`` class gaps above their old mean
and harmless prompts of every language at least ``margin`` gaps below theirs, while the
rest of the residual stream (everything orthogonal to v̂, at every prompt position)
stays the base model's. No mid- or low-resource harmful prompt is shown: how far the
sharpening carries to them is what makes their gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .upper_lora import _decoder, _layers, _stack, step

__all__ = ["block_output", "signal_loss", "train_signal"]


def block_output(hf, first: int, last: int, x: Float[Tensor, "batch pos d_model"],
                 mask: Tensor) -> Float[Tensor, "batch pos d_model"]:
    """Blocks ``first .. last`` run on ``x`` (the output of block first − 1); block ``last``'s output."""
    grabbed = {}

    def grab(module, args, output):
        grabbed["h"] = output[0] if isinstance(output, tuple) else output

    with _layers(hf, slice(first, last + 1)) as full:
        handle = full[last].register_forward_hook(grab)
        try:
            _decoder(hf)(inputs_embeds=x, attention_mask=mask)
        finally:
            handle.remove()
    return grabbed["h"]


def signal_loss(h: Tensor, h0: Tensor, mask: Tensor, last: Tensor, direction: Tensor, low: Tensor, high: Tensor,
                gap: float, keep: float) -> Tensor:
    """Squared hinge on the last token's projection (below ``low`` or above ``high``, in gaps) plus ``keep`` ×
    the relative squared change orthogonal to v̂ at every prompt position. NaN bounds are not enforced."""
    rows = torch.arange(len(h))
    x = h[rows, last] @ direction
    below = torch.nan_to_num(torch.relu(low - x) / gap)
    above = torch.nan_to_num(torch.relu(x - high) / gap)
    change = h - h0
    change = change - (change @ direction)[..., None] * direction
    m = mask[..., None].float()
    kept = (change.pow(2) * m).sum() / (h0.pow(2) * m).sum()
    return (below.pow(2) + above.pow(2)).mean() + keep * kept


def train_signal(hf, states_in: Sequence[Tensor], base_out: Sequence[Tensor], direction: Tensor, low: np.ndarray,
                 high: np.ndarray, gap: float, *, first: int, layer: int, epochs: int, lr: float, batch_size: int,
                 keep: float = 1.0, seed: int = 0, progress: bool = True) -> list[float]:
    """AdamW on ``hf``'s trainable (LoRA) parameters in blocks ``first .. layer``; one prompt per state.

    ``states_in[i]``: the prompt's output of block first − 1 ``[pos, d_model]``;
    ``base_out[i]``: the base model's output of block ``layer``; ``low``/``high``: the
    bounds on its last-token projection (NaN: none).
    """
    params = [p for p in hf.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr)
    lengths = [len(s) for s in states_in]
    low_t, high_t = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
    losses: list[float] = []
    steps = epochs * -(-len(states_in) // batch_size)
    bar = tqdm(total=steps, desc=f"signal LoRA {first}-{layer}", disable=not progress)
    hf.train()
    with torch.enable_grad():
        for e in range(epochs):
            order = np.random.default_rng([seed, e]).permutation(len(states_in))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                x, mask = _stack([states_in[i] for i in idx], [lengths[i] for i in idx])
                h0, _ = _stack([base_out[i] for i in idx], [lengths[i] for i in idx])
                last = torch.tensor([lengths[i] - 1 for i in idx])
                h = block_output(hf, first, layer, x, mask)
                step(signal_loss(h, h0, mask, last, direction, low_t[idx], high_t[idx], gap, keep), optim, losses, bar)
    bar.close()
    hf.eval()
    return losses
