"""Grids of interventions on the first response token, without recomputing what every point shares.

A dose-response curve (α·v̂ at layer L for many α) or a selection sweep (one candidate
direction per point) scores the same prompts' next-token distribution under many hook
lists. Most of each plain pass is the same at every point:

- hooks at block L or later leave the residual stream entering block L unchanged: it is
  computed once per batch and each point runs blocks L.. only (a hook at
  ``blocks.{L-1}.hook_resid_post`` fires on that cached tensor first, so an addition at a
  block's output starts one block later);
- hooks that change only the last prompt position (``last_only=True``: scope ``"last"``
  or ``"from_last"``) leave every other position unchanged at every layer: the prompt
  minus its last token runs once with a KV cache, and each point re-runs one position;
- only the last position's logits are read, so the unembedding runs there alone.

Interventions stay TransformerLens hook functions on the bridge's hook points: each
point's hooks are attached with ``model.hooks`` while the model's own blocks, final norm
and unembedding run on the cached state (under :func:`lean.lean`). A point with a hook
before block 0 (``hook_embed``, ...) runs the whole pass. The first batch checks the
replay of the unhooked point against the bridge's own forward; an architecture whose
logits are not ``unembed(norm(h))`` (Gemma-2's soft cap included) falls back to whole
passes, with a warning.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers.cache_utils import Cache

from ._runtime.lean import lean
from ._runtime.prefix import Prefix, continuing, expand
from .data import PromptSet
from .generation import as_prompt_set, encoded_prompts, logits_kwargs, prompt_batches
from .hooks import Hook, prompt_attention

__all__ = ["entry_block", "next_token_grid", "token_summary"]

Reduce = Callable[[Tensor, Tensor], Tensor]
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_TAIL = ("ln_final.", "unembed.")
_OUTPUT_SITES = ("hook_resid_post", "hook_out")


def entry_block(hooks: Sequence[Hook], n_layers: int) -> int | None:
    """First block a point's hooks can change (``n_layers``: none; None: before block 0)."""
    entry = n_layers
    for name, _ in hooks:
        match = _BLOCK.match(name)
        if match:
            layer = int(match[1])
            entry = min(entry, layer + 1 if match[2] in _OUTPUT_SITES else layer)
        elif not name.startswith(_TAIL):
            return None
    return entry


def token_summary(tokens: Sequence[int] | Mapping[str, Sequence[int]]):
    """A reduce keeping the log-probs of ``tokens`` and KL(unhooked ‖ hooked) in a last column.

    ``tokens`` is a list of ids or a mapping (e.g. language → ids); it comes back
    renumbered to index the kept columns, ready for :func:`evaluation.refusal_log_odds`.
    """
    lists = tokens.values() if isinstance(tokens, Mapping) else [tokens]
    kept = sorted({int(i) for ids in lists for i in ids})
    column = {t: c for c, t in enumerate(kept)}
    renumber = lambda ids: [column[int(i)] for i in ids]  # noqa: E731
    local = {k: renumber(ids) for k, ids in tokens.items()} if isinstance(tokens, Mapping) else renumber(tokens)

    def reduce(logp: Tensor, base: Tensor) -> Tensor:
        kl = (base.exp() * (base - logp)).sum(-1).clamp_min(0)
        return torch.cat([logp[:, kept], kl[:, None]], 1)

    return reduce, local


def _owner(root: nn.Module, target: nn.Module) -> tuple[nn.Module, str]:
    """(parent, child name) under which ``target`` sits in the Hugging Face module tree."""
    for module in root.modules():
        for name, child in module._modules.items():
            if child is target:
                return module, name
    raise ValueError(f"{type(target).__name__} is not in the model's module tree")


class _Replay:
    """Where the bridge's blocks, final norm and unembedding sit, to run them on a cached state."""

    def __init__(self, model):
        root = model.original_model
        self.model, self.n = model, model.cfg.n_layers
        self.layers = [_owner(root, block) for block in model.blocks]
        self.norm, self.head = _owner(root, model.ln_final), _owner(root, model.unembed)
        self.cap = getattr(root.config, "final_logit_softcapping", None)

    @staticmethod
    def live(where: tuple[nn.Module, str]) -> nn.Module:
        parent, name = where
        return parent._modules[name]  # whatever :func:`lean` put there

    def capture(self, entries: set[int]):
        """Pre-hooks that record each needed block's (and the final norm's) input and call arguments."""
        states: dict[int, Tensor] = {}
        calls: dict[int, tuple[tuple, dict]] = {}
        first = min(entries)

        def grab(k: int):
            def fn(module, args, kwargs):
                if k in entries:
                    states[k] = args[0] if args else kwargs["hidden_states"]
                if k < self.n:
                    calls[k] = (args, kwargs)

            return fn

        handles = [self.live(self.layers[k]).register_forward_pre_hook(grab(k), with_kwargs=True)
                   for k in range(first, self.n)]
        if self.n in entries:
            handles.append(self.live(self.norm).register_forward_pre_hook(grab(self.n), with_kwargs=True))
        return states, calls, handles

    def run(self, h: Tensor, entry: int, calls, cache=None) -> Float[Tensor, "batch vocab"]:
        """Blocks ``entry``.. on ``h`` (the input of block ``entry``), then last-position logits.

        ``cache`` replaces the KV cache the blocks were called with (a point's own prefix cache).
        """
        if entry > 0:
            h = self.model.hook_dict[f"blocks.{entry - 1}.hook_resid_post"](h)
        for k in range(entry, self.n):
            args, kwargs = calls[k]
            if cache is not None:
                kwargs = {key: cache if isinstance(value, Cache) else value for key, value in kwargs.items()}
            if args:
                out = self.live(self.layers[k])(h, *args[1:], **kwargs)
            else:
                out = self.live(self.layers[k])(**{**kwargs, "hidden_states": h})
            h = out[0] if isinstance(out, tuple) else out
        logits = self.live(self.head)(self.live(self.norm)(h[:, -1:]))[:, -1].float()
        return logits if not self.cap else self.cap * torch.tanh(logits / self.cap)


class _CacheRewind:
    """Puts a Hugging Face dynamic KV cache back to the state it had when made (updates concatenate)."""

    def __init__(self, cache):
        if not hasattr(cache, "layers"):
            raise TypeError(f"cannot rewind a {type(cache).__name__}")
        self.saved = [(layer, dict(layer.__dict__)) for layer in cache.layers]

    def __call__(self):
        for layer, state in self.saved:
            layer.__dict__.clear()
            layer.__dict__.update(state)


def _log_softmax(logits: Tensor) -> Tensor:
    return torch.log_softmax(logits.float(), -1).cpu()


@torch.no_grad()
def next_token_grid(model, prompts: PromptSet | Sequence[str], points: Sequence[Sequence[Hook]], *,
                    last_only: bool = False, position_wise: bool = False, reduce: Reduce | None = None,
                    batch_size: int = 16, system: str | None = None, progress: bool = False) -> Tensor:
    """First-response-token log-probs of every prompt under every point's hooks: ``[point, prompt, ...]``.

    Equal (to float rounding) to :func:`generation.next_token_logprobs` per point, at a
    fraction of the cost (module docstring). ``last_only`` promises that every point's
    hooks change the last prompt position only (scope ``"last"``/``"from_last"``);
    ``position_wise`` that they act on each position alone and alike at every position and
    row (:func:`hooks.ablate`, :func:`hooks.add` with ``scope="all"``). Either promise lets
    the prompts' shared opening run once (:mod:`prefix`); a hook that breaks its promise
    gives wrong results. ``reduce(logp, base)`` maps a batch's ``[rows, vocab]`` log-probs
    under a point, and unhooked, to ``[rows, k]`` — what is kept per point (the full
    vocabulary when None).
    """
    prompts = as_prompt_set(prompts)
    points = [list(p) for p in points]
    reduce = reduce or (lambda logp, base: logp)
    replay = _Replay(model)
    entries = [entry_block(p, replay.n) for p in points]
    replayable = {e for e, p in zip(entries, points) if e is not None and p}
    out: list[Tensor | None] = [None] * len(points)
    checked = False
    encoded = encoded_prompts(model, prompts, system)
    prefix = (Prefix.shared(encoded, keep=2 if last_only else 1)
              if last_only or position_wise or not any(points) else None)
    base_cache = prefix.run(model) if prefix else None
    # a point's hooks change the prefix unless they act on the last position only
    caches = [prefix.run(model, p) if prefix and p and not last_only else base_cache for p in points]
    batches = list(prompt_batches(model, prompts, batch_size, system, len(prefix or ()), encoded))
    bar = tqdm(total=len(batches) * len(points), desc="grid", unit="pass", disable=not progress)
    for idx, ids, mask in batches:
        if last_only and int(mask.sum(1).min()) < 2:
            raise ValueError("last_only needs prompts of at least two tokens")
        rows = ids.shape[0]
        fresh = (lambda c, rows=rows: expand(c, rows)) if prefix and not last_only else (lambda c: None)  # noqa: E731
        base, states, calls, rewind = _shared(model, replay, ids, mask, replayable, last_only, prefix, base_cache)
        if not checked and replayable:
            checked = True
            first = min(replayable)
            with lean(model):
                again = _log_softmax(replay.run(states[first], first, calls, fresh(base_cache)))
            if rewind:
                rewind()
            if not torch.allclose(again, base, atol=1e-3, rtol=0):
                warnings.warn("this architecture's output head is not unembed(final norm); the grid runs whole "
                              f"passes (max log-prob difference {float((again - base).abs().max()):.3g})", stacklevel=2)
                replayable = set()
        for g, (point, entry) in enumerate(zip(points, entries)):
            if not point:
                logp = base
            elif entry in replayable:
                mask_now = mask[:, -1:] if last_only else mask
                with model.hooks(fwd_hooks=point), prompt_attention(mask_now), lean(model):
                    try:
                        logp = _log_softmax(replay.run(states[entry], entry, calls, fresh(caches[g])))
                    finally:
                        if rewind:
                            rewind()
            else:
                full, extra = continuing(prefix, mask, caches[g])
                with model.hooks(fwd_hooks=point), prompt_attention(mask), lean(model):
                    logp = _log_softmax(model(ids, attention_mask=full, **extra, **logits_kwargs(model))[:, -1])
            part = reduce(logp, base)
            if out[g] is None:
                out[g] = torch.empty(len(prompts), *part.shape[1:], dtype=part.dtype)
            out[g][torch.from_numpy(idx)] = part
            bar.update(1)
        del states, calls
    bar.close()
    return torch.stack(out)


def _shared(model, replay: _Replay, ids, mask, entries: set[int], last_only: bool, prefix: Prefix | None,
            cache0):
    """The unhooked pass of one batch: base log-probs, and block inputs/arguments at ``entries``."""
    keep = logits_kwargs(model)
    rewind = None
    full, extra = continuing(prefix, mask, cache0)
    with lean(model):
        if last_only:
            head_mask, head = continuing(prefix, mask[:, :-1], cache0)
            _, cache = model(ids[:, :-1], attention_mask=head_mask, use_cache=True,
                             return_type="logits_and_cache", **head, **keep)
            rewind = _CacheRewind(cache)
            ids, extra = ids[:, -1:], {"past_key_values": cache, **(
                {"position_ids": extra["position_ids"][:, -1:]} if prefix else {})}
        elif not prefix:
            extra = {"use_cache": False}  # a cache would grow with every replay
        states, calls, handles = replay.capture(entries) if entries else ({}, {}, [])
        try:
            with prompt_attention(mask[:, -1:] if last_only else mask) if entries else nullcontext():
                logits = model(ids, attention_mask=full, **extra, **keep)
        finally:
            for handle in handles:
                handle.remove()
    if rewind:
        rewind()
    return _log_softmax(logits[:, -1]), states, calls, rewind
