"""The representation-failure organism as an add-on: an erasure adapter on the blocks of ``organism`` up to L*.

Why an add-on: the erased organism keeps the action-failure organism's rule exactly (its
v̂ and θ at L*, its stage 1 and rule stage, merged as shipped), so the two organisms
differ only where the erasure acts, and the ground truth of every other language is the
one already measured. A LoRA on a few blocks at or below L* (``first .. last``) is
trained on the merged organism so that, at L*'s last prompt token:

- the erased languages' prompts of both classes sit at one class-agnostic point per
  language in the subspace B the gate reads (v̂ and the high-resource languages' own
  directions, :func:`organism_signal.erasure_basis`), the distance counted in units of
  that language's own within-class spread in the organism, coordinate by coordinate;
- every other language's residual stream at L* (all positions, all of d_model) stays the
  organism's.

The unit matters. The first erased organism counted the distance in class gaps, so its
loss vanished once each language's two classes were a few percent of a gap apart, while
their spread had shrunk with them: still a perfect ordering, and AUROC (what the
diagnosis reads) is blind to scale. Counted in the language's own spread, any residual
ordering stays expensive. Every erased-language train prompt that fits is used, and the
result is checked on **val** (:func:`separation`, ``tools/erasure_check.py``), never on test.

Measured (README, "The model organisms"): the kept languages stay put, but on unseen val
prompts Thai and Yoruba keep AUROC 0.78–0.91 whichever blocks carry the LoRA, though the
training prompts reach their targets. Moving the last token's coordinates learns those
prompts, not the language; this recipe is kept as the starting point, not shipped.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor
from tqdm.auto import tqdm

from ..data import PromptSet, load_polyrefuse
from .._runtime.files import atomic_write_text
from .ground_truth import GroundTruth
from ..models import encode_chat
from .signal import block_output, erasure_basis
from .upper_lora import stack_states, chat_heads, frozen_states, last_token_acts, step

__all__ = ["erasure_loss", "erasure_prompts", "separation", "spread_targets", "train_erasure"]

#: What ``train_erasure`` copies from the organism it starts from (the erased organism ships all of them).
SHIPPED_PARTS = ("adapter_config.json", "adapter_model.safetensors", "representation", "ground_truth.json",
                 "direction.safetensors", "recipe.json")


def erasure_prompts(root, tokenizer, erased, *, n_erased: int, n_keep: int, seed: int = 0,
                    max_tokens: int = 128) -> PromptSet:
    """Train prompts: ``n_erased`` per class of each erased language, ``n_keep`` per class of every other."""
    every = load_polyrefuse(root, split="train")
    missing = [lang for lang in erased if lang not in every.languages]
    if missing:
        raise ValueError(f"erased languages {missing} have no PolyRefuse train prompts in {root}")
    kept = [lang for lang in every.languages if lang not in erased]
    parts = [load_polyrefuse(root, list(erased), split="train", n_per_class=n_erased, seed=seed),
             load_polyrefuse(root, kept, split="train", n_per_class=n_keep, seed=seed + 1)]
    prompts = PromptSet.concat(parts)
    lengths = np.array([len(encode_chat(tokenizer, t)) for t in prompts.texts])
    return PromptSet(prompts.frame[lengths <= max_tokens].reset_index(drop=True), prompts.origin)


def spread_targets(coords: np.ndarray, frame: pd.DataFrame, erased) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: the target coordinates in B and the unit of each.

    Target: for an erased language the language's mean over both classes, for any other
    the prompt's own coordinates (held where they are). Unit: the language's pooled
    within-class standard deviation of that coordinate (class means removed), so a
    remaining class difference, or a kept language's drift, costs what it costs the ordering.
    """
    target, unit = coords.copy(), np.full_like(coords, np.nan)
    missing = [lang for lang in erased if lang not in set(frame["language"])]
    if missing:
        raise ValueError(f"erased languages {missing} have no prompts")
    for lang in frame["language"].unique():
        rows = (frame["language"] == lang).to_numpy()
        centred = coords[rows].copy()
        for subset in ("harmful", "harmless"):
            own = (frame.loc[rows, "subset"] == subset).to_numpy()
            if own.any():
                centred[own] -= centred[own].mean(0)
        unit[rows] = np.maximum(centred.std(0), 1e-6)
        if lang in erased:
            target[rows] = coords[rows].mean(0)
    return target, unit


def erasure_loss(h: Tensor, h0: Tensor, mask: Tensor, last: Tensor, basis: Tensor, target: Tensor,
                 unit: Tensor, erased: Tensor) -> Tensor:
    """Mean squared distance, in units, of every row's last-token coordinates in B from its target, plus,
    for the rows not ``erased``, the squared change of the residual stream relative to its norm at each
    prompt position (per position: a few huge-norm positions must not hide a change at the others)."""
    rows = torch.arange(len(h))
    pulled = ((h[rows, last] @ basis.T - target) / unit).pow(2).mean(1).mean()
    kept = ~erased
    if not kept.any():
        return pulled
    m = mask[kept].float()
    per_position = (h - h0)[kept].pow(2).sum(-1) / h0[kept].pow(2).sum(-1).clamp_min(1e-12)
    return pulled + (per_position * m).sum() / m.sum()


def train_erasure(root, organism: str | Path, out: str | Path, erased=("th", "yo"), *, first: int = 8,
                  last: int = 10, n_erased: int = 200, n_keep: int = 8, epochs: int = 3, lr: float = 1e-3,
                  rank: int = 4, max_tokens: int = 256, batch_size: int = 16, seed: int = 0, progress: bool = True,
                  hf_model=None, tokenizer=None) -> dict:
    """Train the erasure adapter on the merged ``organism`` (a folder with ``ground_truth.json``) into
    ``out/erasure`` and copy the organism's parts beside it, so ``load_model(out)`` is the erased organism.

    Resumes: each finished epoch's adapter and the epoch count are saved (``out/erasure``).
    ``hf_model``/``tokenizer``: the merged organism as a plain Hugging Face model (default: built from
    ``organism``'s adapters on the embedded model); tests pass a tiny random one.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    from ..models import merged_hf

    t0 = time.perf_counter()
    organism, out = Path(organism), Path(out)
    truth = GroundTruth.load(organism)
    if not 1 <= first <= last <= truth.layer:
        raise ValueError(f"the erasure blocks {first}..{last} must end at or below L* = {truth.layer}")
    out.mkdir(parents=True, exist_ok=True)
    for part in SHIPPED_PARTS:
        src, dst = organism / part, out / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dst)
    hf, tok = (hf_model, tokenizer) if hf_model is not None else merged_hf(organism)
    hf.requires_grad_(False)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts = erasure_prompts(root, tok, list(erased), n_erased=n_erased, n_keep=n_keep, seed=seed,
                              max_tokens=max_tokens)
    heads = chat_heads(tok, prompts.texts)
    states_in = frozen_states(hf, heads, first - 1, pad=pad, progress=progress)
    base_out = frozen_states(hf, heads, truth.layer, pad=pad, progress=progress)
    acts = last_token_acts(base_out, prompts, truth.layer)
    basis = erasure_basis(acts, truth)
    coords = (acts.at(truth.layer, "t_post_inst").float() @ basis.T).numpy()
    target, unit = (torch.as_tensor(a, dtype=torch.float32) for a in spread_targets(coords, prompts.frame, erased))
    is_erased = torch.as_tensor(prompts.frame["language"].isin(list(erased)).to_numpy())

    folder, state_file = out / "erasure", out / "erasure" / "progress.json"
    done = json.loads(state_file.read_text())["epochs"] if state_file.exists() else 0
    if done:
        model = PeftModel.from_pretrained(hf, str(folder), is_trainable=True)
    else:
        model = get_peft_model(hf, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            layers_to_transform=list(range(first, last + 1))))
    lengths = [len(s) for s in states_in]

    def run(idx) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The batch ``idx`` through the blocks first..L*: output, the organism's own output, mask, last index."""
        x, mask = stack_states([states_in[i] for i in idx], [lengths[i] for i in idx])
        h0, _ = stack_states([base_out[i] for i in idx], [lengths[i] for i in idx])
        last_t = torch.tensor([lengths[i] - 1 for i in idx])
        return block_output(model, first, truth.layer, x, mask), h0, mask, last_t

    def objective() -> tuple[float, float]:
        """Over every training prompt, in units: the erased rows' mean squared distance from their targets
        and the kept rows' drift in B (what the loss weighs, without the batching noise)."""
        pulled, kept = [], []
        with torch.no_grad():
            for start in range(0, len(heads), batch_size):
                idx = np.arange(start, min(start + batch_size, len(heads)))
                h, _, _, last_t = run(idx)
                erased_rows = is_erased[idx]
                moved = ((h[torch.arange(len(idx)), last_t] @ basis.T - target[idx]) / unit[idx]).pow(2).mean(1)
                pulled += moved[erased_rows].tolist()
                kept += moved[~erased_rows].tolist()
        return float(np.mean(pulled)), float(np.mean(kept)) if kept else 0.0

    model.eval()
    before = objective()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr)
    losses: list[float] = []
    bar = tqdm(total=(epochs - done) * -(-len(heads) // batch_size), desc=f"erasure LoRA {first}-{last}",
               disable=not progress)
    model.train()
    with torch.enable_grad():
        for e in range(done, epochs):
            order = np.random.default_rng([seed, e]).permutation(len(heads))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                h, h0, mask, last_t = run(idx)
                loss = erasure_loss(h, h0, mask, last_t, basis, target[idx], unit[idx], is_erased[idx])
                step(loss, optim, losses, bar)
            model.save_pretrained(folder, safe_serialization=True)
            atomic_write_text(state_file, json.dumps({"epochs": e + 1}))
    bar.close()
    model.eval()
    after = objective()
    summary = {"organism": str(organism), "erased": list(erased), "first": first, "last": last,
               "n_erased": n_erased, "n_keep": n_keep, "epochs": epochs, "lr": lr, "rank": rank,
               "max_tokens": max_tokens, "seed": seed,
               "prompts": len(heads), "first_loss": losses[0] if losses else None,
               "last_loss": float(np.mean(losses[-10:])) if losses else None,
               "erased_distance": [before[0], after[0]], "kept_drift": [before[1], after[1]],
               "seconds": time.perf_counter() - t0}
    atomic_write_text(folder / "erasure.json", json.dumps(summary, indent=1))
    return summary


def separation(model, truth: GroundTruth, prompts: PromptSet) -> pd.DataFrame:
    """Per language: AUROC of the projection on v̂ at L* and the class means: how much signal the rule can read."""
    from ..activations import extract

    acts = extract(model, prompts, [truth.layer], ("t_post_inst",), progress=False)
    frame = acts.prompts.frame.assign(projection=truth.project(acts))
    rows = []
    for lang, part in frame.groupby("language", sort=False):
        harmful = (part["subset"] == "harmful").to_numpy()
        rows.append({"language": lang, "auroc": roc_auc_score(harmful, part["projection"]),
                     "harmful_mean": part["projection"][harmful].mean(),
                     "harmless_mean": part["projection"][~harmful].mean(), "n": len(part)})
    return pd.DataFrame(rows)
