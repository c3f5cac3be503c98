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

The representation-failure organism (``organism-erased``) is not trained: it is this
organism under a script lesion (:class:`lowres_safety.lesion.ScriptLesion`), which makes
Thai and Korean unreadable. The LoRA erasures tried before it are in the research log.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .._runtime.files import atomic_write_text
from .ground_truth import GroundTruth
from .upper_lora import decoder, decoder_layers, frozen_states, last_token_acts, stack_states, step

__all__ = ["block_output", "sharpen", "signal_loss", "stage_key", "train_signal"]


def block_output(hf, first: int, last: int, x: Float[Tensor, "batch pos d_model"],
                 mask: Tensor) -> Float[Tensor, "batch pos d_model"]:
    """Blocks ``first .. last`` run on ``x`` (the output of block first − 1); block ``last``'s output."""
    grabbed = {}

    def grab(module, args, output):
        grabbed["h"] = output[0] if isinstance(output, tuple) else output

    with decoder_layers(hf, slice(first, last + 1)) as full:
        handle = full[last].register_forward_hook(grab)
        try:
            decoder(hf)(inputs_embeds=x, attention_mask=mask)
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
                x, mask = stack_states([states_in[i] for i in idx], [lengths[i] for i in idx])
                h0, _ = stack_states([base_out[i] for i in idx], [lengths[i] for i in idx])
                last = torch.tensor([lengths[i] - 1 for i in idx])
                h = block_output(hf, first, layer, x, mask)
                loss = signal_loss(h, h0, mask, last, direction, low_t[idx], high_t[idx], gap, keep)
                step(loss, optim, losses, bar)
    bar.close()
    hf.eval()
    return losses


def sharpen(hf, heads, prompts, config, folder, pad: int, progress: bool):
    """Stage 1 of the organism recipe (``config``: an ``organism.RecipeConfig``): train, save the adapter in
    ``folder``, return the merged model. A finished stage 1 in ``folder`` made from the same settings and
    prompts (``stage.json``) is loaded instead of retrained, so an interrupted recipe resumes after it."""
    from peft import LoraConfig, PeftModel, get_peft_model

    key = stage_key(config, prompts)
    done = Path(folder) / "stage.json"
    if done.exists() and json.loads(done.read_text(encoding="utf-8")).get("key") == key:
        return PeftModel.from_pretrained(hf, str(folder)).merge_and_unload()

    first = config.layer - config.signal_layers + 1
    if first < 1:
        raise ValueError(f"signal_layers={config.signal_layers} reaches below block 1 from layer {config.layer}")
    states_in = frozen_states(hf, heads, first - 1, pad=pad, progress=progress)
    base_out = frozen_states(hf, heads, config.layer, pad=pad, progress=progress)
    acts = last_token_acts(base_out, prompts, config.layer)
    base = GroundTruth.fit(acts, config.layer, config.harmful_languages)
    frame = prompts.frame
    harmful = (frame["subset"] == "harmful").to_numpy()
    low = np.where(harmful, base.threshold + (0.5 + config.signal_margin) * base.gap, np.nan)
    high = np.where(~harmful, base.threshold - (0.5 + config.signal_margin) * base.gap, np.nan)
    lora = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      layers_to_transform=list(range(first, config.layer + 1)))
    model = get_peft_model(hf, lora)
    train_signal(model, states_in, base_out, base.direction, low, high, base.gap, first=first, layer=config.layer,
                 epochs=config.signal_epochs, lr=config.signal_lr, batch_size=16, keep=config.signal_keep,
                 seed=config.seed, progress=progress)
    model.save_pretrained(folder, safe_serialization=True)
    atomic_write_text(done, json.dumps({"key": key}))
    return model.merge_and_unload()


#: The recipe settings stage 1 depends on.
STAGE_FIELDS = ("layer", "signal_layers", "signal_margin", "signal_epochs", "signal_lr", "signal_keep",
                "xstest", "rank", "lora_alpha", "seed", "harmful_languages")
#: Settings stage 1 no longer has, at the value every kept stage 1 was made with: in the key, so a stage-1
#: folder made before they were removed (0.1, the stage-1 erasure) still matches and is not retrained.
_REMOVED = {"erased_languages": []}


def stage_key(config, prompts) -> str:
    """What made a stage-1 adapter: its settings and the ids of its prompts."""
    made = {f: getattr(config, f) for f in STAGE_FIELDS} | _REMOVED | {"ids": list(prompts.frame["id"])}
    return hashlib.sha256(json.dumps(made, sort_keys=True, default=list).encode()).hexdigest()[:16]


def reuse(source: str | Path, out: str | Path) -> list[str]:
    """Copy another organism folder's finished stage 1 (``representation/``) and the base model's cached answers
    (``answers.json``) into ``out`` where it has none, so a variant of the rule stage trains that stage alone.
    Safe by construction: :func:`sharpen` still retrains stage 1 when its settings or prompts differ
    (``stage.json``'s key), and the answers are kept only for the same model, data and length. Returns what
    was copied."""
    source, out = Path(source), Path(out)
    parts = {"representation/": source / "representation" / "stage.json", "answers.json": source / "answers.json"}
    if not any(marker.exists() for marker in parts.values()):
        raise FileNotFoundError(f"{source} has neither a finished stage 1 (representation/stage.json) nor "
                                "answers.json to reuse")
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    if parts["representation/"].exists() and not (out / "representation").exists():
        shutil.copytree(source / "representation", out / "representation")
        copied.append("representation/")
    if parts["answers.json"].exists() and not (out / "answers.json").exists():
        shutil.copy2(parts["answers.json"], out / "answers.json")
        copied.append("answers.json")
    return copied
