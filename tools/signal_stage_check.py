"""Stage 1 of the threshold organism on its own: train it, then predict refusal per language on a held-out split.

    python tools/signal_stage_check.py --data ../shared/data/Multilingual-Refusal [--layer 14 --signal-layers 6
        --epochs 4 --n-harmful 48 --margin 1.0 --keep 1.0 --lr 1e-3]

Prints, per language, the refusal the rule (projection on v̂ at L* > θ) predicts on the
``--split`` prompts (default val: settings are chosen on val, never on test) for harmful
and harmless prompts, and the AUROC of the projection. θ is the
midpoint of the class means on high-resource train prompts that stage 1 never saw.
Nothing is saved: this is for choosing the stage's settings before a full organism run.
"""

import argparse
import dataclasses
import time

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from lowres_safety import organism, probing
from lowres_safety.data import PromptSet, load_polyrefuse, tier
from lowres_safety.models import _default_folder
from lowres_safety.organism_signal import train_signal
from lowres_safety.upper_lora import chat_heads, frozen_states, last_token_acts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val", choices=("val", "test"))
    for name, kind, default in (("layer", int, 14), ("signal-layers", int, 6), ("epochs", int, 4),
                                ("n-harmful", int, 48), ("margin", float, 1.0), ("keep", float, 1.0),
                                ("lr", float, 1e-3), ("seed", int, 0)):
        p.add_argument(f"--{name}", type=kind, default=default)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(_default_folder())
    hf = AutoModelForCausalLM.from_pretrained(_default_folder(), dtype=torch.float32)
    hf.requires_grad_(False)
    pad = tok.pad_token_id or 0
    prompts = organism.build_prompts(a.data, tok, organism.RecipeConfig(n_harmful=a.n_harmful, seed=a.seed))
    high = [lang for lang in tier("high") if lang in prompts.languages]

    def heads(ps):
        return chat_heads(tok, ps.texts)

    def acts_of(model, ps):
        return last_token_acts(frozen_states(model, heads(ps), a.layer, pad=pad, progress=False), ps, a.layer)

    t0 = time.perf_counter()
    first = a.layer - a.signal_layers + 1
    states_in = frozen_states(hf, heads(prompts), first - 1, pad=pad, progress=False)
    base_out = frozen_states(hf, heads(prompts), a.layer, pad=pad, progress=False)
    base = organism.GroundTruth.fit(last_token_acts(base_out, prompts, a.layer), a.layer, high)
    harmful = (prompts.frame["subset"] == "harmful").to_numpy()
    low = np.where(harmful, base.threshold + (0.5 + a.margin) * base.gap, np.nan)
    highb = np.where(~harmful, base.threshold - (0.5 + a.margin) * base.gap, np.nan)
    model = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        layers_to_transform=list(range(first, a.layer + 1))))
    train_signal(model, states_in, base_out, base.direction, low, highb, base.gap, first=first, layer=a.layer,
                 epochs=a.epochs, lr=a.lr, batch_size=16, keep=a.keep, seed=a.seed)
    merged = model.merge_and_unload()
    print(f"stage 1: {time.perf_counter() - t0:.0f} s")
    fitted = organism.GroundTruth.fit(acts_of(merged, prompts), a.layer, high)
    fresh = load_polyrefuse(a.data, high, split="train", n_per_class=60, seed=a.seed + 7)
    fresh = PromptSet(fresh.frame[~fresh.frame["id"].isin(prompts.frame["id"])].reset_index(drop=True), "fresh")
    x = fitted.project(acts_of(merged, fresh))
    y = fresh.labels == 1
    truth = dataclasses.replace(fitted, threshold=float((x[y].mean() + x[~y].mean()) / 2),
                                gap=float(x[y].mean() - x[~y].mean()))
    print(f"theta: base {base.threshold:.1f} (gap {base.gap:.1f}); on stage-1 prompts {fitted.threshold:.1f}; "
          f"on {len(fresh)} unseen train prompts {truth.threshold:.1f} (gap {truth.gap:.1f})")
    held = load_polyrefuse(a.data, split=a.split, n_per_class=16, seed=a.seed)
    pred = truth.predict(acts_of(merged, held))
    for lang, part in pred.groupby("language", sort=False):
        rate = part.groupby("subset")["refused"].mean() * 100
        au = float(probing.auroc(part["projection"].to_numpy(), (part["subset"] == "harmful").to_numpy()))
        print(f"{lang}: harmful {rate['harmful']:.0f}%  harmless {rate['harmless']:.0f}%  AUROC {au:.2f}")


if __name__ == "__main__":
    main()
