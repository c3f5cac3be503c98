"""Stage 1 of the threshold organism on its own: train it, then predict refusal per language on held-out sets.

    python docs/experiments/signal_stage_check.py --data ../shared/data/Multilingual-Refusal [--layer 16 --signal-layers 6
        --epochs 4 --n-harmful 48 --n-harmless 28 --margin 1.0 --keep 1.0 --lr 1e-3 --xstest]
    python docs/experiments/signal_stage_check.py --data ... --organism organism    # a shipped organism's stage 1, untrained

Prints, per language, the refusal the rule (projection on v̂ at L* > θ) predicts on
PolyRefuse **val** (every prompt) and on the built-in demo set (topical twins, another
style of prompt: how far the stage carries beyond PolyRefuse's train prompts), for
harmful and harmless prompts, and the AUROC of the projection. θ is the midpoint of the
class means on 16 + 16 high-resource train prompts per language that stage 1 never saw,
as in the recipe. Settings are chosen on these, never on test. Nothing is saved.
"""

import argparse
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lowres_safety import probing
from lowres_safety.data import load_builtin, load_polyrefuse
from lowres_safety.models import default_folder
from lowres_safety.organisms import recipe as organism
from lowres_safety.organisms import signal as organism_signal
from lowres_safety.organisms.ground_truth import GroundTruth
from lowres_safety.organisms.upper_lora import chat_heads, frozen_states, last_token_acts
from lowres_safety.shipped import adapter_dir


def rates(truth: GroundTruth, acts) -> list[str]:
    pred = truth.predict(acts)
    lines = []
    for lang, part in pred.groupby("language", sort=False):
        rate = part.groupby("subset")["refused"].mean() * 100
        au = float(probing.auroc(part["projection"].to_numpy(), (part["subset"] == "harmful").to_numpy()))
        lines.append(f"  {lang}: harmful {rate.get('harmful', np.nan):3.0f}%  harmless {rate.get('harmless', np.nan):3.0f}%"
                     f"  AUROC {au:.2f}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--organism", help="evaluate this shipped organism's stage 1 and θ instead of training one")
    p.add_argument("--xstest", action="store_true", help="stage 1 also pushes xstest's 66 safe English prompts down")
    p.add_argument("--val-harmful", action="store_true", help="stage 1 also sees every val harmful prompt of the "
                   "high-resource languages (their val figures are then seen prompts: choose on the demo set)")
    p.add_argument("--out", help="keep stage 1 in OUT/representation, where `lowres-safety organism train --out OUT` "
                   "with the same settings picks it up instead of training it again")
    for name, kind, default in (("layer", int, 16), ("signal-layers", int, 6), ("epochs", int, 4),
                                ("n-harmful", int, 48), ("n-harmless", int, 28), ("margin", float, 1.0),
                                ("keep", float, 1.0), ("lr", float, 1e-3), ("seed", int, 0)):
        p.add_argument(f"--{name}", type=kind, default=default)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(default_folder())
    hf = AutoModelForCausalLM.from_pretrained(default_folder(), dtype=torch.float32)
    hf.requires_grad_(False)
    pad = tok.pad_token_id or 0
    config = organism.RecipeConfig(layer=a.layer, signal_layers=a.signal_layers, signal_epochs=a.epochs,
                                   n_harmful=a.n_harmful, n_harmless=a.n_harmless, signal_margin=a.margin,
                                   signal_keep=a.keep, signal_lr=a.lr, seed=a.seed, xstest=a.xstest,
                                   val_harmful=a.val_harmful)

    def acts_of(model, ps):
        return last_token_acts(frozen_states(model, chat_heads(tok, ps.texts), config.layer, pad=pad, progress=False),
                               ps, config.layer)

    t0 = time.perf_counter()
    if a.organism:
        from dataclasses import replace

        from peft import PeftModel

        merged = PeftModel.from_pretrained(hf, str(adapter_dir(a.organism) / "representation")).merge_and_unload()
        truth = GroundTruth.load(adapter_dir(a.organism))
        config = replace(config, layer=truth.layer)  # acts_of reads the organism's own L*
        made = f"{a.organism}'s stage 1"
    else:
        import tempfile
        from pathlib import Path

        prompts = organism.build_prompts(a.data, tok, config)
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(a.out) / "representation" if a.out else Path(scratch)
            merged = organism_signal.sharpen(hf, chat_heads(tok, prompts.texts), prompts, config, folder, pad, True)
        fitted = GroundTruth.fit(acts_of(merged, prompts), config.layer, config.harmful_languages)
        fresh = organism.unseen_prompts(a.data, tok, config, prompts)
        truth = fitted.rethreshold(acts_of(merged, fresh))
        made = f"stage 1 on {len(prompts)} prompts"
    print(f"{made}: {time.perf_counter() - t0:.0f} s; θ {truth.threshold:.1f} (gap {truth.gap:.1f})")
    print("PolyRefuse val:")
    print("\n".join(rates(truth, acts_of(merged, load_polyrefuse(a.data, split="val")))))
    print("built-in demo set:")
    print("\n".join(rates(truth, acts_of(merged, load_builtin()))))


if __name__ == "__main__":
    main()
