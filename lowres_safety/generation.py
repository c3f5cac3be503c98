"""Generation and next-token distributions under any list of hooks.

Prompts are chat-formatted, grouped by length and left-padded with an attention mask.
Generation is a KV-cached loop on the bridge: one prefill pass over the prompt, then one
pass per new token inside :func:`hooks.decoding`, so token-scoped and conditional hooks
know which pass they are in. Greedy decoding of a batch equals decoding each prompt
alone, token for token (tested).

Both run under :func:`lean.lean` (only the hook points in use are live; the rest of the
model runs as plain Hugging Face modules) and compute logits at the last position only:
what a pass reads. That keeps routed generation close to Hugging Face's own ``generate``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ._runtime.batching import left_pad, length_batches
from ._runtime.decoding import toolkit_generation
from ._runtime.lean import lean
from ._runtime.prefix import Prefix, continuing
from .data import PromptSet
from .hooks import Hook, decoding, prompt_attention, steers_in
from .models import encode_chat

__all__ = ["as_prompt_set", "encoded_prompts", "generate", "generate_scored", "logits_kwargs", "next_token_logprobs",
           "prompt_batches", "stop_token_ids"]


def logits_kwargs(model) -> dict:
    """``{"logits_to_keep": 1}`` where the Hugging Face model takes it: logits at the last position only."""
    forward = getattr(getattr(model, "original_model", None), "forward", None)
    try:
        return {"logits_to_keep": 1} if forward and "logits_to_keep" in inspect.signature(forward).parameters else {}
    except (TypeError, ValueError):
        return {}


def as_prompt_set(prompts: PromptSet | Sequence[str], language: str = "en") -> PromptSet:
    """A PromptSet as is, or plain strings wrapped as harmless prompts of ``language``."""
    if isinstance(prompts, PromptSet):
        return prompts
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(len(texts))], "text": texts, "language": language,
                          "subset": "harmless", "split": "adhoc", "source_id": [f"p{i}" for i in range(len(texts))]})
    return PromptSet(frame, "ad-hoc prompts")


def stop_token_ids(model) -> list[int]:
    """End-of-turn ids: the tokenizer's EOS plus the generation config's."""
    ids = {model.tokenizer.eos_token_id}
    config = getattr(getattr(model, "original_model", None), "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    ids |= set(extra if isinstance(extra, (list, tuple)) else [extra])
    return sorted(i for i in ids if i is not None)


def encoded_prompts(model, prompts: PromptSet, system: str | None = None) -> list[tuple[int, ...]]:
    """Chat-formatted token ids of every prompt."""
    if len(prompts) == 0:
        raise ValueError("the prompt set is empty")
    return [tuple(encode_chat(model.tokenizer, text, system).ids) for text in prompts.texts]


def prompt_batches(model, prompts: PromptSet, batch_size: int, system: str | None, skip: int = 0,
             encoded: Sequence[tuple[int, ...]] | None = None
             ) -> Iterator[tuple[np.ndarray, Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]]:
    """Length-grouped, left-padded batches; ``skip`` drops each prompt's first tokens (a cached prefix).

    ``encoded``: the prompts' :func:`encoded_prompts`, where the caller already has them.
    """
    tok = model.tokenizer
    encoded = [ids[skip:] for ids in (encoded if encoded is not None else encoded_prompts(model, prompts, system))]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = model.cfg.device
    for idx in length_batches([len(e) for e in encoded], batch_size):
        ids, mask = left_pad([encoded[i] for i in idx], pad)
        yield idx, ids.to(device), mask.to(device)


@torch.no_grad()
def _generate_batch(model, ids, mask, hooks, max_new_tokens: int, stop: Tensor, generator,
                    temperature: float | None, prefix: Prefix | None = None, prefix_cache=None
                    ) -> tuple[list[list[int]], list[bool], list[dict], Tensor]:
    """One batch; with ``prefix``, ``ids`` are the rest of each prompt after it and ``prefix_cache`` its KV cache."""
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows = ids.shape[0]
    tokens, done = [], torch.zeros(rows, dtype=torch.bool, device=ids.device)
    full, start = continuing(prefix, mask, prefix_cache)
    place = start["position_ids"][:, -1:] if prefix else None
    with model.hooks(fwd_hooks=list(hooks)), lean(model), toolkit_generation():
        with prompt_attention(mask):
            logits, cache = model(ids, attention_mask=full, return_type="logits_and_cache", **start,
                                  **logits_kwargs(model))
        first = torch.log_softmax(logits[:, -1].float(), -1).cpu()
        steers = [{"score": s.score, "alpha": s.alpha, "ablate": s.ablate} for s in steers_in(hooks)]
        with decoding():
            for step in range(max_new_tokens):
                last = logits[:, -1].float()
                if temperature is None:
                    nxt = last.argmax(-1)
                else:
                    probs = torch.softmax(last / temperature, -1).cpu()
                    nxt = torch.multinomial(probs, 1, generator=generator)[:, 0].to(ids.device)
                nxt = torch.where(done, pad, nxt)
                tokens.append(nxt)
                done |= torch.isin(nxt, stop)
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                full = torch.cat([full, torch.ones_like(full[:, :1])], 1)
                where = {} if place is None else {"position_ids": place + step + 1}
                logits, cache = model(nxt[:, None], attention_mask=full, past_key_values=cache,
                                      return_type="logits_and_cache", **where)
    out = torch.stack(tokens, 1).cpu().tolist() if tokens else [[] for _ in range(rows)]
    stops = set(stop.tolist())
    trimmed, finished = [], []
    for row in out:
        cut = next((i for i, t in enumerate(row) if t in stops), None)
        trimmed.append(row if cut is None else row[:cut])
        finished.append(cut is not None)
    return trimmed, finished, steers, first


def generate(
    model,
    prompts: PromptSet | Sequence[str],
    hooks: Sequence[Hook] = (),
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    temperature: float | None = None,
    seed: int = 0,
    system: str | None = None,
    stop_at_eos: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Completions of every prompt under ``hooks``, as a tidy table with the prompts' metadata.

    Greedy by default; ``temperature`` samples (seeded per batch: the same seed and batch
    size give the same text). Under conditional hooks (:func:`hooks.route`, the AdaSteer-
    and CAST-style baselines) each row also gets ``gate_score``, ``alpha`` and
    ``ablated``: which prompts were steered and which ablated.
    """
    return _generate(model, prompts, hooks, max_new_tokens, batch_size, temperature, seed, system, stop_at_eos,
                     progress, keep_first=False)[0]


def generate_scored(model, prompts: PromptSet | Sequence[str], hooks: Sequence[Hook] = (), *,
                    max_new_tokens: int = 64, batch_size: int = 16, temperature: float | None = None, seed: int = 0,
                    system: str | None = None, stop_at_eos: bool = True,
                    progress: bool = True) -> tuple[pd.DataFrame, Float[Tensor, "prompt vocab"]]:
    """:func:`generate`, plus the first response token's log-probs from the same prefill pass.

    Those are what :func:`next_token_logprobs` computes under the same hooks, so a logit
    judge can score the prompts without a second pass over them. The log-probs take
    prompts × vocabulary floats (75 MB for 384 prompts of a 49k vocabulary).
    """
    return _generate(model, prompts, hooks, max_new_tokens, batch_size, temperature, seed, system, stop_at_eos,
                     progress, keep_first=True)


def _generate(model, prompts, hooks, max_new_tokens, batch_size, temperature, seed, system, stop_at_eos, progress,
              keep_first: bool) -> tuple[pd.DataFrame, Tensor | None]:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be positive (or None for greedy), got {temperature}")
    prompts = as_prompt_set(prompts)
    stop = torch.tensor(stop_token_ids(model) if stop_at_eos else [-1], device=model.cfg.device)
    n = len(prompts)
    completions, n_tokens, finished = [""] * n, [0] * n, [False] * n
    decisions: dict[str, list] = {}
    first = None
    hooks = list(hooks)
    # unhooked, the prompts' shared opening (the chat template's system turn) runs once
    encoded = encoded_prompts(model, prompts, system)
    prefix = None if hooks else Prefix.shared(encoded)
    prefix_cache = prefix.run(model) if prefix else None
    bar = tqdm(total=n, unit="prompt", desc="generate", disable=not progress)
    for b, (idx, ids, mask) in enumerate(prompt_batches(model, prompts, batch_size, system, len(prefix or ()), encoded)):
        generator = torch.Generator().manual_seed(seed * 100_003 + b)
        rows, done, steers, logp = _generate_batch(model, ids, mask, hooks, max_new_tokens, stop, generator,
                                                   temperature, prefix, prefix_cache)
        if keep_first:
            first = torch.empty(n, logp.shape[-1]) if first is None else first
            first[torch.from_numpy(idx)] = logp
        for j, i in enumerate(idx):
            completions[i] = model.tokenizer.decode(rows[j], skip_special_tokens=True)
            n_tokens[i], finished[i] = len(rows[j]), done[j]
        for s, steer in enumerate(steers):
            suffix = "" if len(steers) == 1 else f"_{s}"
            for key, col in (("score", "gate_score"), ("alpha", "alpha"), ("ablate", "ablated")):
                values = decisions.setdefault(col + suffix, [None] * n)
                for j, i in enumerate(idx):
                    values[i] = steer[key][j].item()
        bar.update(len(idx))
    bar.close()
    frame = prompts.frame.copy()
    frame["completion"], frame["n_new_tokens"], frame["finished"] = completions, n_tokens, finished
    for col, values in decisions.items():
        frame[col] = values
    return frame, first


@torch.no_grad()
def next_token_logprobs(model, prompts: PromptSet | Sequence[str], hooks: Sequence[Hook] = (), *,
                        batch_size: int = 16, system: str | None = None,
                        progress: bool = False) -> Float[Tensor, "prompt vocab"]:
    """Log-probabilities of the first response token of every prompt (one prefill pass each)."""
    prompts = as_prompt_set(prompts)
    out = None
    with model.hooks(fwd_hooks=list(hooks)), lean(model):
        for idx, ids, mask in tqdm(list(prompt_batches(model, prompts, batch_size, system)), desc="score",
                                   disable=not progress):
            with prompt_attention(mask):
                logits = model(ids, attention_mask=mask, **logits_kwargs(model))[:, -1].float()
            if out is None:
                out = torch.empty(len(prompts), logits.shape[-1])
            out[torch.from_numpy(idx)] = torch.log_softmax(logits, -1).cpu()
    return out
