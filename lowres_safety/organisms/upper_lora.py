"""LoRA training above a layer, from cached states of the frozen layers below it.

The threshold organism (:mod:`organism`) trains only the layers above L*, so the
residual stream at L* is the base model's own for every input, and each training example
is a cached L* state plus a shift along v̂. Computing the frozen layers once per sequence
and reusing them across epochs halves the cost of a step (the upper half of the network
runs forward and backward; the lower half never runs again).

The upper layers run as a Hugging Face model whose ``model.layers`` is temporarily the
slice above L*, fed the cached states as ``inputs_embeds``: the same modules (and LoRA
weights) as the full model, so the adapter saves under the full model's names. That
this equals the full forward pass is tested.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..activations import ActivationSet
from ..hooks import project_out
from ..models import format_chat

__all__ = ["Encoded", "Example", "chat_heads", "decoder", "decoder_layers", "frozen_states", "last_token_acts",
           "only_layers_above", "stack_states", "step", "train_steps"]

#: One training sequence: token ids and where the response starts.
Encoded = tuple[list[int], int]


def chat_heads(tokenizer, texts: Sequence[str]) -> list[Encoded]:
    """Each prompt chat-formatted and tokenized with no response yet (it would start at the end)."""
    encoded = (tokenizer(format_chat(tokenizer, t), add_special_tokens=False)["input_ids"] for t in texts)
    return [(ids, len(ids)) for ids in encoded]


def last_token_acts(states: Sequence[Tensor], prompts, layer: int) -> ActivationSet:
    """The last prompt token of each :func:`frozen_states` sequence, as an ActivationSet at ``layer``
    (position ``t_post_inst``): what the organism's ground truth reads."""
    return ActivationSet(torch.stack([h[-1] for h in states])[:, None, None], prompts, (layer,), ("t_post_inst",))


def decoder(hf):
    """The module holding ``layers`` (``model.model`` of a causal LM, through a peft wrapper too)."""
    inner = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
    return inner.model


@contextlib.contextmanager
def decoder_layers(hf, keep: slice):
    """Run only the decoder blocks in ``keep`` while the block lasts; yields the full list."""
    inner = decoder(hf)
    full = inner.layers
    inner.layers = torch.nn.ModuleList(list(full)[keep])
    try:
        yield full
    finally:
        inner.layers = full


@contextlib.contextmanager
def only_layers_above(hf, layer: int):
    """Within the block, ``hf`` runs only decoder layers ``layer + 1 ..`` (inputs: ``hidden_states[layer + 1]``)."""
    with decoder_layers(hf, slice(layer + 1, None)):
        yield hf


def _batches(sequences: Sequence[Encoded], batch_size: int, pad: int):
    """Right-padded batches in the given order: (indices, ids, attention mask)."""
    for start in range(0, len(sequences), batch_size):
        idx = list(range(start, min(start + batch_size, len(sequences))))
        width = max(len(sequences[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, i in enumerate(idx):
            row = sequences[i][0]
            ids[j, : len(row)], mask[j, : len(row)] = torch.tensor(row), 1
        yield idx, ids, mask


@torch.no_grad()
def frozen_states(hf, sequences: Sequence[Encoded], layer: int, *, pad: int, batch_size: int = 16,
                  progress: bool = True) -> list[Float[Tensor, "pos d_model"]]:
    """``hidden_states[layer + 1]`` (the output of block ``layer``) of every sequence, unpadded.

    Only blocks ``0 .. layer`` run (no final norm or unembedding is needed); sequences run
    in order of length, so padding costs little.
    """
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    ordered = [sequences[i] for i in order]
    out: list[Tensor | None] = [None] * len(sequences)
    grabbed = {}

    def grab(module, args, output):
        grabbed["h"] = output[0] if isinstance(output, tuple) else output

    bar = tqdm(total=len(sequences), desc=f"states at layer {layer}", unit="seq", disable=not progress)
    with decoder_layers(hf, slice(0, layer + 1)) as full:
        handle = full[layer].register_forward_hook(grab)
        try:
            for idx, ids, mask in _batches(ordered, batch_size, pad):
                decoder(hf)(input_ids=ids, attention_mask=mask)
                for j, i in enumerate(idx):
                    out[order[i]] = grabbed["h"][j, : len(ordered[i][0])].float().clone()
                bar.update(len(idx))
        finally:
            handle.remove()
    bar.close()
    return out


def stack_states(states: Sequence[Tensor], lengths: Sequence[int]) -> tuple[Tensor, Tensor]:
    width = max(lengths)
    x = torch.zeros(len(states), width, states[0].shape[-1])
    mask = torch.zeros(len(states), width, dtype=torch.long)
    for j, (s, n) in enumerate(zip(states, lengths)):
        x[j, :n], mask[j, :n] = s, 1
    return x, mask


#: One training example: the L* output state ``[pos, d_model]``, its sequence, a vector added to the state
#: from the last prompt token on, and a unit vector removed from the state at every position (``None``: neither).
Example = tuple[Tensor, Encoded, "Tensor | None", "Tensor | None"]


def _collate(batch: Sequence[Example]) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded states (each moved as its example says), attention mask and labels."""
    lengths = [len(ids) for _, (ids, _), _, _ in batch]
    x, mask = stack_states([state for state, _, _, _ in batch], lengths)
    labels = torch.full(mask.shape, -100)
    for j, (_, (ids, cut), delta, ablate) in enumerate(batch):
        labels[j, cut : len(ids)] = torch.tensor(ids[cut:])
        if delta is not None:
            x[j, cut - 1 : len(ids)] += delta
        if ablate is not None:
            x[j, : len(ids)] = project_out(x[j, : len(ids)], ablate)
    return x, mask, labels


def step(loss: Tensor, optim, losses: list[float], bar, sched=None) -> None:
    """One optimiser step on ``loss``, recorded in ``losses`` and on the progress bar."""
    loss.backward()
    optim.step()
    if sched is not None:
        sched.step()
    optim.zero_grad()
    losses.append(float(loss.detach()))
    bar.update(1)
    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")


def train_steps(hf, layer: int, epochs: Sequence[list[Example]],
                loss_fn: Callable[[Tensor, Tensor], Tensor], *, lr: float, batch_size: int, seed: int = 0,
                warmup: int = 10, checkpoint: str | Path | None = None, progress: bool = True) -> list[float]:
    """AdamW over ``epochs`` (each a list of :data:`Example`), training the layers above ``layer`` only.

    ``hf`` is a peft-wrapped model whose trainable parameters sit above ``layer``;
    ``loss_fn(logits, labels)`` gets right-padded logits and labels (-100 outside the
    response). Linear warm-up, then linear decay; epoch e is shuffled from (``seed``, e).
    With ``checkpoint`` (a file path) the trainable weights, optimiser, schedule and losses
    are saved after every epoch, and a later call with the same file resumes after the
    last finished epoch: an interrupted run loses at most one epoch.
    """
    params = [p for p in hf.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: wrap the model with LoRA first")
    optim = torch.optim.AdamW(params, lr=lr)
    steps = sum(math.ceil(len(e) / batch_size) for e in epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / steps))
    losses: list[float] = []
    done = 0
    path = Path(checkpoint) if checkpoint else None
    if path is not None and path.exists():
        state = torch.load(path, weights_only=False)
        if len(state["weights"]) != len(params):
            raise ValueError(f"{path} holds {len(state['weights'])} trainable tensors, this model {len(params)}")
        with torch.no_grad():
            for p, value in zip(params, state["weights"]):
                p.copy_(value)
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        losses, done = state["losses"], state["epochs_done"]
    bar = tqdm(total=steps, initial=len(losses), desc="upper-layer LoRA", disable=not progress)
    hf.train()
    with only_layers_above(hf, layer), torch.enable_grad():
        for e in range(done, len(epochs)):
            examples = epochs[e]
            order = np.random.default_rng([seed, e]).permutation(len(examples))
            for start in range(0, len(order), batch_size):
                x, mask, labels = _collate([examples[i] for i in order[start : start + batch_size]])
                step(loss_fn(hf(inputs_embeds=x, attention_mask=mask).logits, labels), optim, losses, bar, sched)
            if path is not None:
                tmp = path.with_name(path.name + ".tmp")
                torch.save({"weights": [p.detach().clone() for p in params], "optim": optim.state_dict(),
                            "sched": sched.state_dict(), "losses": losses, "epochs_done": e + 1}, tmp)
                os.replace(tmp, path)
    bar.close()
    hf.eval()
    return losses
